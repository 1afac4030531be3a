//! Bounded label values: the first `max` distinct topics (and, separately,
//! subscriptions) keep their names as labels, later ones share [`OTHER`].
//! Event ids and keys are never labels.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::RwLock;

/// The label value of every topic or subscription past the cap.
pub const OTHER: &str = "_other";

pub struct LabelCap {
    max: usize,
    topics: RwLock<HashSet<String>>,
    subscriptions: RwLock<HashSet<(String, String)>>,
}

impl LabelCap {
    pub fn new(max: usize) -> LabelCap {
        LabelCap {
            max,
            topics: RwLock::default(),
            subscriptions: RwLock::default(),
        }
    }

    pub fn topic(&self, topic: &str) -> String {
        if admit(&self.topics, self.max, topic.to_string()) {
            topic.to_string()
        } else {
            OTHER.to_string()
        }
    }

    /// (topic label, subscription label).
    pub fn subscription(&self, topic: &str, sub: &str) -> (String, String) {
        let sub_label = if admit(&self.subscriptions, self.max, (topic.into(), sub.into())) {
            sub.to_string()
        } else {
            OTHER.to_string()
        };
        (self.topic(topic), sub_label)
    }
}

/// Whether `value` has (or now gets) its own label.
fn admit<T: Hash + Eq>(set: &RwLock<HashSet<T>>, max: usize, value: T) -> bool {
    if set.read().expect("not poisoned").contains(&value) {
        return true;
    }
    let mut w = set.write().expect("not poisoned");
    if w.contains(&value) {
        return true;
    }
    if w.len() < max {
        w.insert(value);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_fold_into_other() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.topic("a"), "a");
        assert_eq!(cap.topic("b"), "b");
        assert_eq!(cap.topic("c"), OTHER);
        assert_eq!(cap.topic("a"), "a", "admitted values stay");
        assert_eq!(cap.subscription("a", "s1"), ("a".into(), "s1".into()));
        assert_eq!(cap.subscription("a", "s2"), ("a".into(), "s2".into()));
        assert_eq!(cap.subscription("b", "s3"), ("b".into(), OTHER.into()));
        assert_eq!(cap.subscription("c", "s1"), (OTHER.into(), OTHER.into()));
    }
}
