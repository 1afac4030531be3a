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

use crate::subscription::{AttributeCondition, Filter};
use crate::types::StoredEvent;

impl Filter {
    /// Checks patterns and conditions, their syntax and their size.
    pub fn validate(&self, limits: &crate::limits::Limits) -> Result<()> {
        limits.check_filter(self)
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.attributes.is_empty()
    }

    /// Whether `event` passes: its type matches any pattern (or there are none)
    /// and every attribute condition holds.
    pub fn matches(&self, event: &StoredEvent) -> bool {
        any_type_matches(&self.types, &event.event_type)
            && self.attributes.iter().all(|c| c.holds(event))
    }
}

impl AttributeCondition {
    pub fn key(&self) -> &str {
        match self {
            AttributeCondition::Eq { key, .. }
            | AttributeCondition::Ne { key, .. }
            | AttributeCondition::In { key, .. }
            | AttributeCondition::Exists { key, .. }
            | AttributeCondition::Prefix { key, .. } => key,
        }
    }

    pub fn holds(&self, event: &StoredEvent) -> bool {
        let value = event.attributes.get(self.key()).map(String::as_str);
        match self {
            AttributeCondition::Eq { value: want, .. } => value == Some(want.as_str()),
            AttributeCondition::Ne { value: not, .. } => value != Some(not.as_str()),
            AttributeCondition::In { values, .. } => {
                value.is_some_and(|v| values.iter().any(|w| w == v))
            }
            AttributeCondition::Exists { exists, .. } => value.is_some() == *exists,
            AttributeCondition::Prefix { prefix, .. } => {
                value.is_some_and(|v| v.starts_with(prefix.as_str()))
            }
        }
    }
}

#[cfg(test)]
mod condition_tests {
    use super::*;

    fn ev(ty: &str, attrs: &[(&str, &str)]) -> StoredEvent {
        StoredEvent {
            topic_id: crate::types::TopicId(1),
            partition: 0,
            offset: 0,
            publish_time: 0,
            key: String::new(),
            event_type: ty.into(),
            payload: bytes::Bytes::new(),
            content_type: String::new(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            idempotency_key: String::new(),
            event_time: None,
        }
    }

    #[test]
    fn attribute_conditions() {
        let e = ev("order.created", &[("region", "eu-west"), ("tier", "gold")]);
        let s = |s: &str| s.to_string();
        let holds = |c: AttributeCondition| c.holds(&e);
        assert!(holds(AttributeCondition::Eq {
            key: s("tier"),
            value: s("gold")
        }));
        assert!(!holds(AttributeCondition::Eq {
            key: s("tier"),
            value: s("silver")
        }));
        assert!(holds(AttributeCondition::Ne {
            key: s("tier"),
            value: s("silver")
        }));
        assert!(holds(AttributeCondition::Ne {
            key: s("missing"),
            value: s("x")
        }));
        assert!(holds(AttributeCondition::In {
            key: s("tier"),
            values: vec![s("silver"), s("gold")]
        }));
        assert!(!holds(AttributeCondition::In {
            key: s("tier"),
            values: vec![]
        }));
        assert!(holds(AttributeCondition::Exists {
            key: s("region"),
            exists: true
        }));
        assert!(holds(AttributeCondition::Exists {
            key: s("missing"),
            exists: false
        }));
        assert!(holds(AttributeCondition::Prefix {
            key: s("region"),
            prefix: s("eu-")
        }));
        assert!(!holds(AttributeCondition::Prefix {
            key: s("missing"),
            prefix: s("")
        }));
    }

    #[test]
    fn filters_combine_types_and_conditions() {
        let f = Filter {
            types: vec!["order.*".into()],
            attributes: vec![AttributeCondition::Eq {
                key: "tier".into(),
                value: "gold".into(),
            }],
        };
        assert!(f.matches(&ev("order.created", &[("tier", "gold")])));
        assert!(!f.matches(&ev("order.created", &[("tier", "silver")])));
        assert!(!f.matches(&ev("user.created", &[("tier", "gold")])));
        assert!(Filter::default().matches(&ev("anything", &[])));
    }
}
