//! The identity a verified client certificate proves.
//!
//! With mTLS on, rustls has verified the chain during the handshake (a
//! connection with no certificate, an untrusted one or an expired one never
//! gets this far), and tonic has put the peer's certificates into the
//! request's extensions as `TlsConnectInfo<TcpConnectInfo>`. This reads the
//! name of the leaf certificate from there.

use rustls_pki_types::CertificateDer;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use x509_parser::extensions::GeneralName;

/// The verified client certificate's identity, for a request that came
/// over mTLS: its first URI SAN (e.g. a SPIFFE id), else its first DNS SAN,
/// else its first e-mail SAN, else its subject CN. `None` for plaintext,
/// for TLS without a client certificate, and for a certificate that names
/// nothing.
pub fn peer_identity(ext: &http::Extensions) -> Option<String> {
    let info = ext.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    certificate_identity(certs.first()?)
}

/// The identity [`peer_identity`] reads from one DER certificate.
pub fn certificate_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        let first = |pick: fn(&GeneralName<'_>) -> Option<String>| names.iter().find_map(pick);
        let found = first(|n| match n {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .or_else(|| {
            first(|n| match n {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
        })
        .or_else(|| {
            first(|n| match n {
                GeneralName::RFC822Name(email) => Some(email.to_string()),
                _ => None,
            })
        });
        if found.is_some() {
            return found;
        }
    }
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::*;

    fn cert(cn: &str, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    #[test]
    fn uri_san_wins_then_dns_then_email_then_cn() {
        let uri = SanType::URI("spiffe://example.org/ns/prod/sa/orders".try_into().unwrap());
        let email = SanType::Rfc822Name("ops@example.org".try_into().unwrap());
        let all = cert(
            "orders-cn",
            vec![dns("orders.example.org"), email.clone(), uri],
        );
        assert_eq!(
            certificate_identity(&all).as_deref(),
            Some("spiffe://example.org/ns/prod/sa/orders")
        );
        let dns_email = cert("orders-cn", vec![email.clone(), dns("orders.example.org")]);
        assert_eq!(
            certificate_identity(&dns_email).as_deref(),
            Some("orders.example.org")
        );
        let email_only = cert("orders-cn", vec![email]);
        assert_eq!(
            certificate_identity(&email_only).as_deref(),
            Some("ops@example.org")
        );
        let cn_only = cert("orders-cn", vec![]);
        assert_eq!(certificate_identity(&cn_only).as_deref(), Some("orders-cn"));
    }

    #[test]
    fn no_tls_info_no_identity() {
        assert_eq!(peer_identity(&http::Extensions::new()), None);
        assert_eq!(
            certificate_identity(&CertificateDer::from(vec![1, 2, 3])),
            None
        );
    }
}
