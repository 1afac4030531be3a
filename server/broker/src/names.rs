//! Validation of topic and subscription names.

use crate::error::{Error, Result};

/// Longest accepted topic or subscription name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a topic name as the broker stores it: a name (see
/// [`validate_name`]), or `tenant/name` for a topic in a tenant's namespace
/// (the server prefixes the tenant; clients never write the `/`).
pub fn validate_topic_name(name: &str) -> Result<()> {
    match name.split_once('/') {
        Some((tenant, local)) if name.len() <= MAX_NAME_LEN + 1 + MAX_NAME_LEN => {
            validate_name("topic", tenant)?;
            validate_name("topic", local)
        }
        _ => validate_name("topic", name),
    }
}

/// Checks a topic or subscription name: 1 to 255 characters of `[A-Za-z0-9._-]`,
/// starting with a letter or digit. `field` is `"topic"` or `"subscription"`.
pub fn validate_name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; the maximum is {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::invalid(
            field,
            format!("{name:?} contains {bad:?}; use only letters, digits, '.', '_' and '-'"),
        ));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(Error::invalid(
            field,
            format!("{name:?} must start with a letter or digit"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["orders", "orders.v1", "a", "A-b_c.9", &"x".repeat(255)] {
            validate_name("topic", ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        for (bad, needle) in [
            ("", "empty"),
            (&"x".repeat(256) as &str, "maximum"),
            ("has space", "contains"),
            ("ü", "contains"),
            (".hidden", "start with"),
            ("-x", "start with"),
        ] {
            let err = validate_name("topic", bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }
}

#[cfg(test)]
mod tenant_tests {
    use super::*;

    #[test]
    fn a_tenant_prefix_is_one_slash_between_two_names() {
        validate_topic_name("orders").unwrap();
        validate_topic_name("acme/orders").unwrap();
        assert!(validate_topic_name("acme/a/b").is_err());
        assert!(validate_topic_name("/orders").is_err());
        assert!(validate_topic_name("acme/").is_err());
        assert!(validate_name("topic", "acme/orders").is_err());
    }
}
