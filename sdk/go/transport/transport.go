// Package transport picks the transport credentials of a connection to eventbus:
// TLS (and mutual TLS) from the EVENTBUS_TLS_* variables that the eventbus
// CLI reads too, plaintext when none is set.
//
//	opt, err := transport.FromEnv()
//	conn, err := grpc.DialContext(ctx, addr, opt, grpc.WithBlock())
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/ioutil"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLS holds paths to PEM files; every field is optional.
type TLS struct {
	// CAFile: CA certificate(s) the server's certificate must chain to
	// (default: the system roots).
	CAFile string
	// CertFile and KeyFile: a client certificate for mutual TLS.
	CertFile string
	KeyFile  string
	// ServerName: the name to verify the server's certificate against,
	// when it differs from the host in the address.
	ServerName string
}

// TLSFromEnv reads EVENTBUS_TLS_CA, EVENTBUS_TLS_CERT, EVENTBUS_TLS_KEY and
// EVENTBUS_TLS_SERVER_NAME; nil when none is set.
func TLSFromEnv() *TLS {
	t := TLS{
		CAFile:     os.Getenv("EVENTBUS_TLS_CA"),
		CertFile:   os.Getenv("EVENTBUS_TLS_CERT"),
		KeyFile:    os.Getenv("EVENTBUS_TLS_KEY"),
		ServerName: os.Getenv("EVENTBUS_TLS_SERVER_NAME"),
	}
	if t == (TLS{}) {
		return nil
	}
	return &t
}

// Option is the dial option for these settings.
func (t TLS) Option() (grpc.DialOption, error) {
	cfg := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := ioutil.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("a TLS client certificate needs its key, and a key its certificate")
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// FromEnv is the dial option for the EVENTBUS_TLS_* variables: TLS when any
// is set, plaintext otherwise.
func FromEnv() (grpc.DialOption, error) {
	if t := TLSFromEnv(); t != nil {
		return t.Option()
	}
	return grpc.WithInsecure(), nil
}
