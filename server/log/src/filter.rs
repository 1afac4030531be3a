//! Event-type patterns with NATS-style wildcards.
//!
//! Segments are separated by `.`. `*` matches exactly one segment; a final `>`
//! matches one or more segments. `order.*` matches `order.created` but not
//! `order.created.v2`; `order.>` matches both.

use crate::error::{Error, Result};

/// Checks that `pattern` is well-formed: non-empty segments, `>` only last.
pub fn validate_type_pattern(field: &'static str, pattern: &str) -> Result<()> {
    let segments: Vec<&str> = pattern.split('.').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err(Error::invalid(
                field,
                format!("pattern {pattern:?} has an empty segment; write e.g. \"order.*\""),
            ));
        }
        if *seg == ">" && i + 1 != segments.len() {
            return Err(Error::invalid(
                field,
                format!("pattern {pattern:?}: '>' may only be the last segment"),
            ));
        }
    }
    Ok(())
}

/// Whether the event type `ty` matches `pattern`.
pub fn type_matches(pattern: &str, ty: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = ty.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when `patterns` is empty or any of them matches `ty`.
pub fn any_type_matches(patterns: &[String], ty: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| type_matches(p, ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(type_matches("order.created", "order.created"));
        assert!(type_matches("order.*", "order.created"));
        assert!(!type_matches("order.*", "order.created.v2"));
        assert!(!type_matches("order.*", "order"));
        assert!(type_matches("order.>", "order.created"));
        assert!(type_matches("order.>", "order.created.v2"));
        assert!(!type_matches("order.>", "order"));
        assert!(type_matches("*.created", "user.created"));
        assert!(!type_matches("order.created", "order.updated"));
        assert!(type_matches(">", "anything.at.all"));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in ["", "a..b", "a.>.b", ".a"] {
            assert!(validate_type_pattern("types", bad).is_err(), "{bad:?}");
        }
        for ok in ["a", "a.*", "a.>", ">", "*"] {
            validate_type_pattern("types", ok).unwrap();
        }
    }

    #[test]
    fn empty_pattern_list_matches_everything() {
        assert!(any_type_matches(&[], "x"));
        assert!(any_type_matches(&["y".into(), "x".into()], "x"));
        assert!(!any_type_matches(&["y".into()], "x"));
    }
}
