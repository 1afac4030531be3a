// Package smoke tests the generated Go client against a real eventbus server:
//
//	EVENTBUS_ADDR=127.0.0.1:PORT go test -count=1 github.com/eventbus/eventbus/sdk/go/smoke
//
// `cargo xtask test-clients` starts a server and runs this (in GOPATH mode,
// against Debian's grpc-go; see ARCHITECTURE.md).
package smoke

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"sort"
	"testing"
	"time"

	eventbusv1 "github.com/eventbus/eventbus/sdk/go/eventbus/v1"
	"github.com/eventbus/eventbus/sdk/go/transport"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

const timeout = 20 * time.Second

func dial(t *testing.T) (eventbusv1.EventServiceClient, eventbusv1.AdminServiceClient) {
	t.Helper()
	addr := os.Getenv("EVENTBUS_ADDR")
	if addr == "" {
		t.Fatal("set EVENTBUS_ADDR=host:port of a running eventbus server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// TLS (and mTLS) when EVENTBUS_TLS_* are set, as `cargo xtask
	// test-clients` does.
	creds, err := transport.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.DialContext(ctx, addr, creds, grpc.WithBlock())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return eventbusv1.NewEventServiceClient(conn), eventbusv1.NewAdminServiceClient(conn)
}

// uniqueTopic returns a fresh topic name, so runs never share state.
func uniqueTopic(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "go-smoke-" + hex.EncodeToString(b)
}

func TestPublishSubscribeAckNackDeadLetter(t *testing.T) {
	events, admin := dial(t)
	topic, sub := uniqueTopic(t), "smoke"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	publish := func(payload string) string {
		resp, err := events.Publish(ctx, &eventbusv1.PublishRequest{
			Topic: topic,
			Events: []*eventbusv1.PublishEvent{{
				Type: "smoke.test", Payload: []byte(payload), ContentType: "text/plain",
			}},
		})
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if len(resp.Results) != 1 || resp.Results[0].Duplicate || resp.Results[0].EventId == "" {
			t.Fatalf("Publish results: %v", resp.Results)
		}
		return resp.Results[0].EventId
	}
	first, second := publish("first"), publish("second")

	// The stream lives until streamCancel (or the 60 s ctx deadline).
	streamCtx, streamCancel := context.WithCancel(ctx)
	defer streamCancel()
	stream, err := events.Subscribe(streamCtx, &eventbusv1.SubscribeRequest{
		Topic: topic, Subscription: sub, MaxInFlight: 10,
	})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	var pending []*eventbusv1.Delivery
	next := func() *eventbusv1.Delivery {
		for len(pending) == 0 {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("Subscribe stream: %v", err)
			}
			pending = resp.Deliveries
		}
		d := pending[0]
		pending = pending[1:]
		return d
	}

	// Both events arrive once, on their first attempt, in any order.
	got := map[string]*eventbusv1.Delivery{}
	for len(got) < 2 {
		d := next()
		if _, dup := got[d.Event.GetEventId()]; dup {
			t.Fatalf("event %s delivered twice before any nack", d.Event.GetEventId())
		}
		got[d.Event.GetEventId()] = d
	}
	ids := []string{}
	for id, d := range got {
		ids = append(ids, id)
		if d.DeliveryAttempt != 1 || d.Event.Topic != topic || d.Event.Type != "smoke.test" ||
			d.Event.ContentType != "text/plain" {
			t.Fatalf("unexpected first delivery: %v", d)
		}
	}
	want := []string{first, second}
	sort.Strings(ids)
	sort.Strings(want)
	if ids[0] != want[0] || ids[1] != want[1] {
		t.Fatalf("delivered %v, published %v", ids, want)
	}
	if p := string(got[first].Event.Payload); p != "first" {
		t.Fatalf("payload of first: %q", p)
	}
	if p := string(got[second].Event.Payload); p != "second" {
		t.Fatalf("payload of second: %q", p)
	}

	// Ack the first: settled for good.
	if _, err := events.Ack(ctx, &eventbusv1.AckRequest{
		Topic: topic, Subscription: sub, AckIds: []string{got[first].AckId},
	}); err != nil {
		t.Fatalf("Ack: %v", err)
	}

	// Nack the second with no delay: it comes back at once, attempt 2.
	if _, err := events.Nack(ctx, &eventbusv1.NackRequest{
		Topic: topic, Subscription: sub, AckIds: []string{got[second].AckId},
		Delay: durationpb.New(0),
	}); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	again := next()
	if again.Event.GetEventId() != second || again.DeliveryAttempt != 2 {
		t.Fatalf("redelivery: want %s attempt 2, got %s attempt %d",
			second, again.Event.GetEventId(), again.DeliveryAttempt)
	}
	if again.AckId == got[second].AckId {
		t.Fatal("a redelivery must carry a new ack_id")
	}

	// Dead-letter it: it shows up in the subscription's DLQ.
	if _, err := events.Nack(ctx, &eventbusv1.NackRequest{
		Topic: topic, Subscription: sub, AckIds: []string{again.AckId},
		DeadLetter: true, Reason: "go smoke: poison",
	}); err != nil {
		t.Fatalf("Nack dead_letter: %v", err)
	}
	streamCancel()

	var dead []*eventbusv1.DeadLetter
	for deadline := time.Now().Add(timeout); len(dead) == 0 && time.Now().Before(deadline); {
		resp, err := admin.ListDeadLetters(ctx, &eventbusv1.ListDeadLettersRequest{
			Topic: topic, Subscription: sub,
		})
		if err != nil {
			t.Fatalf("ListDeadLetters: %v", err)
		}
		if dead = resp.DeadLetters; len(dead) == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if len(dead) != 1 || dead[0].Event.GetEventId() != second {
		t.Fatalf("dead letters: want only %s, got %v", second, dead)
	}
	if dead[0].Reason != "go smoke: poison" || dead[0].DeliveryAttempts != 2 ||
		string(dead[0].Event.Payload) != "second" {
		t.Fatalf("dead letter: %v", dead[0])
	}
}

// TestDefaultClientReceivesBigEvents: 16 events of 1 MB with max_in_flight
// 256, on a connection with grpc-go's defaults (4 MiB receive limit). The
// server must split deliveries into messages that fit; one partition makes a
// single read-ahead hold all of them, the case that used to be one 5 MB
// message.
func TestDefaultClientReceivesBigEvents(t *testing.T) {
	events, admin := dial(t)
	topic, sub := uniqueTopic(t), "smoke"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, &eventbusv1.CreateTopicRequest{Topic: topic, Partitions: 1}); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	const count, size = 16, 1_000_000
	published := map[string]bool{}
	for i := 0; i < count; i += 4 {
		batch := []*eventbusv1.PublishEvent{}
		for j := i; j < i+4; j++ {
			batch = append(batch, &eventbusv1.PublishEvent{
				Type: "smoke.big", Payload: bytes.Repeat([]byte{byte(j)}, size),
			})
		}
		resp, err := events.Publish(ctx, &eventbusv1.PublishRequest{Topic: topic, Events: batch})
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		for _, r := range resp.Results {
			published[r.EventId] = true
		}
	}
	if len(published) != count {
		t.Fatalf("published %d distinct events, want %d", len(published), count)
	}

	stream, err := events.Subscribe(ctx, &eventbusv1.SubscribeRequest{
		Topic: topic, Subscription: sub, MaxInFlight: 256,
	})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	got := map[string]bool{}
	for len(got) < count {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Subscribe stream after %d of %d events: %v", len(got), count, err)
		}
		for _, d := range resp.Deliveries {
			p := d.Event.GetPayload()
			if len(p) != size || !bytes.Equal(p, bytes.Repeat(p[:1], size)) {
				t.Fatalf("event %s: payload of %d bytes is not what was published", d.Event.GetEventId(), len(p))
			}
			if !published[d.Event.GetEventId()] {
				t.Fatalf("delivered %s, which was not published", d.Event.GetEventId())
			}
			got[d.Event.GetEventId()] = true
			if _, err := events.Ack(ctx, &eventbusv1.AckRequest{
				Topic: topic, Subscription: sub, AckIds: []string{d.AckId},
			}); err != nil {
				t.Fatalf("Ack: %v", err)
			}
		}
	}
}

func TestBadRequestIsInvalidArgument(t *testing.T) {
	events, _ := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := events.Publish(ctx, &eventbusv1.PublishRequest{
		Topic:  "",
		Events: []*eventbusv1.PublishEvent{{Payload: []byte("x")}},
	})
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Fatalf("Publish with an empty topic: want InvalidArgument, got %v (%v)", got, err)
	}
}

func TestPublishStreamAnswersEachRequestByID(t *testing.T) {
	events, _ := dial(t)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := events.PublishStream(ctx)
	if err != nil {
		t.Fatalf("PublishStream: %v", err)
	}
	ev := &eventbusv1.PublishEvent{Type: "smoke.test", Payload: []byte("s"), ContentType: "text/plain"}
	for _, req := range []*eventbusv1.PublishStreamRequest{
		{Topic: topic, Events: []*eventbusv1.PublishEvent{ev, ev}, RequestId: 1},
		{Topic: topic, RequestId: 2}, // no events: fails alone
		{Topic: topic, Events: []*eventbusv1.PublishEvent{ev}, RequestId: 3},
	} {
		if err := stream.Send(req); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	answers := map[uint64]*eventbusv1.PublishStreamResponse{}
	for {
		a, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		answers[a.RequestId] = a
	}
	if len(answers) != 3 || len(answers[1].Results) != 2 || answers[1].Failure != nil ||
		len(answers[3].Results) != 1 {
		t.Fatalf("answers: %v", answers)
	}
	if f := answers[2].GetFailure(); f == nil || codes.Code(f.Code) != codes.InvalidArgument || f.Message == "" {
		t.Fatalf("request 2: want an InvalidArgument failure, got %v", answers[2])
	}
}

func TestSubscribeStreamSettlesOnTheStream(t *testing.T) {
	events, _ := dial(t)
	topic := uniqueTopic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ev := &eventbusv1.PublishEvent{Type: "smoke.test", Payload: []byte("s"), ContentType: "text/plain"}
	if _, err := events.Publish(ctx, &eventbusv1.PublishRequest{
		Topic: topic, Events: []*eventbusv1.PublishEvent{ev, ev},
	}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	stream, err := events.SubscribeStream(ctx)
	if err != nil {
		t.Fatalf("SubscribeStream: %v", err)
	}
	send := func(req *eventbusv1.SubscribeStreamRequest) {
		if err := stream.Send(req); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	send(&eventbusv1.SubscribeStreamRequest{Request: &eventbusv1.SubscribeStreamRequest_Subscribe{
		Subscribe: &eventbusv1.SubscribeRequest{Topic: topic, Subscription: "smoke", MaxInFlight: 10},
	}})
	var ackIDs []string
	for len(ackIDs) < 2 {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		for _, d := range msg.Deliveries {
			ackIDs = append(ackIDs, d.AckId)
		}
	}
	send(&eventbusv1.SubscribeStreamRequest{RequestId: 1, Request: &eventbusv1.SubscribeStreamRequest_Ack{
		Ack: &eventbusv1.AckRequest{AckIds: ackIDs},
	}})
	// A malformed ack id fails its own request only.
	send(&eventbusv1.SubscribeStreamRequest{RequestId: 2, Request: &eventbusv1.SubscribeStreamRequest_Ack{
		Ack: &eventbusv1.AckRequest{AckIds: []string{"not-an-ack-id"}},
	}})
	// Closing the input ends the stream with OK once both are answered.
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	answers := map[uint64]*eventbusv1.SettleAnswer{}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		for _, a := range msg.Settled {
			answers[a.RequestId] = a
		}
	}
	if a := answers[1]; a == nil || a.Failure != nil || len(a.StaleAckIds) != 0 {
		t.Fatalf("request 1: want a clean ack, got %v", a)
	}
	if f := answers[2].GetFailure(); f == nil || codes.Code(f.Code) != codes.InvalidArgument || f.Message == "" {
		t.Fatalf("request 2: want an InvalidArgument failure, got %v", answers[2])
	}
}
