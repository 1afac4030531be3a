import datetime

from . import event_pb2 as _event_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("topic", "events")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.PublishEvent]
    def __init__(self, topic: _Optional[str] = ..., events: _Optional[_Iterable[_Union[_event_pb2.PublishEvent, _Mapping]]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_event_pb2.PublishResult]
    def __init__(self, results: _Optional[_Iterable[_Union[_event_pb2.PublishResult, _Mapping]]] = ...) -> None: ...

class PublishStreamRequest(_message.Message):
    __slots__ = ("topic", "events", "request_id")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    topic: str
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.PublishEvent]
    request_id: int
    def __init__(self, topic: _Optional[str] = ..., events: _Optional[_Iterable[_Union[_event_pb2.PublishEvent, _Mapping]]] = ..., request_id: _Optional[int] = ...) -> None: ...

class PublishStreamResponse(_message.Message):
    __slots__ = ("request_id", "results", "failure")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    results: _containers.RepeatedCompositeFieldContainer[_event_pb2.PublishResult]
    failure: PublishFailure
    def __init__(self, request_id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[_event_pb2.PublishResult, _Mapping]]] = ..., failure: _Optional[_Union[PublishFailure, _Mapping]] = ...) -> None: ...

class PublishFailure(_message.Message):
    __slots__ = ("code", "message", "retry_delay")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_delay: _duration_pb2.Duration
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("topic", "subscription", "max_in_flight")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    subscription: str
    max_in_flight: int
    def __init__(self, topic: _Optional[str] = ..., subscription: _Optional[str] = ..., max_in_flight: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[_event_pb2.Delivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[_event_pb2.Delivery, _Mapping]]] = ...) -> None: ...

class SubscribeStreamRequest(_message.Message):
    __slots__ = ("subscribe", "ack", "nack", "modify_ack_deadline", "request_id")
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    MODIFY_ACK_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    subscribe: SubscribeRequest
    ack: AckRequest
    nack: NackRequest
    modify_ack_deadline: ModifyAckDeadlineRequest
    request_id: int
    def __init__(self, subscribe: _Optional[_Union[SubscribeRequest, _Mapping]] = ..., ack: _Optional[_Union[AckRequest, _Mapping]] = ..., nack: _Optional[_Union[NackRequest, _Mapping]] = ..., modify_ack_deadline: _Optional[_Union[ModifyAckDeadlineRequest, _Mapping]] = ..., request_id: _Optional[int] = ...) -> None: ...

class SubscribeStreamResponse(_message.Message):
    __slots__ = ("deliveries", "settled")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[_event_pb2.Delivery]
    settled: _containers.RepeatedCompositeFieldContainer[SettleAnswer]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[_event_pb2.Delivery, _Mapping]]] = ..., settled: _Optional[_Iterable[_Union[SettleAnswer, _Mapping]]] = ...) -> None: ...

class SettleAnswer(_message.Message):
    __slots__ = ("request_id", "stale_ack_ids", "failure")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STALE_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    stale_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    failure: SettleFailure
    def __init__(self, request_id: _Optional[int] = ..., stale_ack_ids: _Optional[_Iterable[str]] = ..., failure: _Optional[_Union[SettleFailure, _Mapping]] = ...) -> None: ...

class SettleFailure(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("topic", "subscription", "ack_ids")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    subscription: str
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topic: _Optional[str] = ..., subscription: _Optional[str] = ..., ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NackRequest(_message.Message):
    __slots__ = ("topic", "subscription", "ack_ids", "delay", "reason", "dead_letter")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    topic: str
    subscription: str
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    delay: _duration_pb2.Duration
    reason: str
    dead_letter: bool
    def __init__(self, topic: _Optional[str] = ..., subscription: _Optional[str] = ..., ack_ids: _Optional[_Iterable[str]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ..., dead_letter: _Optional[bool] = ...) -> None: ...

class NackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModifyAckDeadlineRequest(_message.Message):
    __slots__ = ("topic", "subscription", "ack_ids", "ack_deadline")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    ACK_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    topic: str
    subscription: str
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    ack_deadline: _duration_pb2.Duration
    def __init__(self, topic: _Optional[str] = ..., subscription: _Optional[str] = ..., ack_ids: _Optional[_Iterable[str]] = ..., ack_deadline: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ModifyAckDeadlineResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplayRequest(_message.Message):
    __slots__ = ("topic", "partitions", "start_offset", "start_time", "end_offset", "end_time", "types", "follow")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partitions: _containers.RepeatedScalarFieldContainer[int]
    start_offset: int
    start_time: _timestamp_pb2.Timestamp
    end_offset: int
    end_time: _timestamp_pb2.Timestamp
    types: _containers.RepeatedScalarFieldContainer[str]
    follow: bool
    def __init__(self, topic: _Optional[str] = ..., partitions: _Optional[_Iterable[int]] = ..., start_offset: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_offset: _Optional[int] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., types: _Optional[_Iterable[str]] = ..., follow: _Optional[bool] = ...) -> None: ...

class ReplayResponse(_message.Message):
    __slots__ = ("events", "caught_up")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_event_pb2.Event]
    caught_up: bool
    def __init__(self, events: _Optional[_Iterable[_Union[_event_pb2.Event, _Mapping]]] = ..., caught_up: _Optional[bool] = ...) -> None: ...
