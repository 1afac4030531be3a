//! What each RPC needs from its caller: the one table of permissions.
//!
//! Every handler gets its request through [`super::context::Call::authorize`],
//! which takes only [`Guarded`] requests and checks [`Guarded::need`] with
//! [`crate::auth::authorize`] before the handler runs, so a new RPC cannot
//! skip the check: without an entry here it does not compile. Topic names
//! here are as the caller wrote them (inside its tenant's namespace).

use eventbus_proto::v1::*;

use crate::auth::Permission;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// This permission on this topic (`admin` implies the others).
    Topic(Permission, &'a str),
    /// Any grant on the topic: reading its metadata.
    AnyGrant(&'a str),
    /// Nothing up front: the answer holds only the topics the caller has a
    /// grant on (listings, the status).
    Filtered,
    /// The global admin grant: server-wide calls.
    Server,
}

impl Need<'_> {
    /// The topic the request names, or "" for server-wide calls.
    pub fn target(&self) -> &str {
        match self {
            Need::Topic(_, topic) | Need::AnyGrant(topic) => topic,
            Need::Filtered | Need::Server => "",
        }
    }
}

/// A request that says what it needs; see the module doc.
pub trait Guarded {
    /// The RPC's name, as audit records and denials show it.
    const ACTION: &'static str;
    fn need(&self) -> Need<'_>;
}

macro_rules! guarded {
    ($($request:ty => $action:literal, |$r:ident| $need:expr;)*) => {
        $(impl Guarded for $request {
            const ACTION: &'static str = $action;
            fn need(&self) -> Need<'_> {
                let $r = self;
                $need
            }
        })*
    };
}

use Permission::{Admin, Publish, Subscribe};

guarded! {
    PublishRequest => "Publish", |r| Need::Topic(Publish, &r.topic);
    // Checked per request of the stream: each names its topic.
    PublishStreamRequest => "PublishStream", |r| Need::Topic(Publish, &r.topic);
    SubscribeRequest => "Subscribe", |r| Need::Topic(Subscribe, &r.topic);
    AckRequest => "Ack", |r| Need::Topic(Subscribe, &r.topic);
    NackRequest => "Nack", |r| Need::Topic(Subscribe, &r.topic);
    ModifyAckDeadlineRequest => "ModifyAckDeadline", |r| Need::Topic(Subscribe, &r.topic);
    ReplayRequest => "Replay", |r| Need::Topic(Subscribe, &r.topic);
    CreateTopicRequest => "CreateTopic", |r| Need::Topic(Admin, &r.topic);
    GetTopicRequest => "GetTopic", |r| Need::AnyGrant(&r.topic);
    ListTopicsRequest => "ListTopics", |_r| Need::Filtered;
    DeleteTopicRequest => "DeleteTopic", |r| Need::Topic(Admin, &r.topic);
    // Consumers create their own groups, as with Subscribe's auto-creation.
    CreateSubscriptionRequest => "CreateSubscription", |r| Need::Topic(Subscribe, &r.topic);
    GetSubscriptionRequest => "GetSubscription", |r| Need::Topic(Subscribe, &r.topic);
    ListSubscriptionsRequest => "ListSubscriptions", |r| Need::Topic(Subscribe, &r.topic);
    UpdateSubscriptionRequest => "UpdateSubscription", |r| Need::Topic(Admin, &r.topic);
    DeleteSubscriptionRequest => "DeleteSubscription", |r| Need::Topic(Admin, &r.topic);
    PauseSubscriptionRequest => "PauseSubscription", |r| Need::Topic(Admin, &r.topic);
    ResumeSubscriptionRequest => "ResumeSubscription", |r| Need::Topic(Admin, &r.topic);
    SeekSubscriptionRequest => "SeekSubscription", |r| Need::Topic(Admin, &r.topic);
    // Dead letters hold events: reading them is subscribing; changing them is admin.
    ListDeadLettersRequest => "ListDeadLetters", |r| Need::Topic(Subscribe, &r.topic);
    GetDeadLetterRequest => "GetDeadLetter", |r| Need::Topic(Subscribe, &r.topic);
    RedriveDeadLettersRequest => "RedriveDeadLetters", |r| Need::Topic(Admin, &r.topic);
    PurgeDeadLettersRequest => "PurgeDeadLetters", |r| Need::Topic(Admin, &r.topic);
    GetStatusRequest => "GetStatus", |_r| Need::Filtered;
    CreateBackupRequest => "CreateBackup", |_r| Need::Server;
    ListAuditRecordsRequest => "ListAuditRecords", |_r| Need::Server;
}
