// Quickstart: publish, consume with ack, dead-letter and list dead letters.
//
//	EVENTBUS_ADDR=127.0.0.1:50051 go run github.com/eventbus/eventbus/sdk/go/examples/quickstart
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	eventbusv1 "github.com/eventbus/eventbus/sdk/go/eventbus/v1"
	"github.com/eventbus/eventbus/sdk/go/transport"
	"google.golang.org/grpc"
)

func main() {
	addr := os.Getenv("EVENTBUS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// TLS: EVENTBUS_TLS_CA (trust this CA), EVENTBUS_TLS_CERT + EVENTBUS_TLS_KEY
	// (mTLS), EVENTBUS_TLS_SERVER_NAME; plaintext when none is set.
	creds, err := transport.FromEnv()
	if err != nil {
		log.Fatal(err)
	}
	conn, err := grpc.DialContext(ctx, addr, creds, grpc.WithBlock())
	if err != nil {
		log.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	events := eventbusv1.NewEventServiceClient(conn)
	admin := eventbusv1.NewAdminServiceClient(conn)

	topic := fmt.Sprintf("orders-%d", time.Now().UnixNano()) // auto-created on first publish
	sub := "billing"                                         // auto-created on first subscribe

	resp, err := events.Publish(ctx, &eventbusv1.PublishRequest{Topic: topic, Events: []*eventbusv1.PublishEvent{
		{Key: "customer-42", Type: "order.created", Payload: []byte(`{"id": 1}`), ContentType: "application/json"},
		{Key: "customer-7", Type: "order.created", Payload: []byte("not json"), ContentType: "application/json"},
	}})
	if err != nil {
		log.Fatalf("Publish: %v", err)
	}
	for _, r := range resp.Results {
		fmt.Printf("published %s at partition %d offset %d\n", r.EventId, r.Partition, r.Offset)
	}

	streamCtx, stop := context.WithCancel(ctx)
	defer stop()
	stream, err := events.Subscribe(streamCtx, &eventbusv1.SubscribeRequest{Topic: topic, Subscription: sub, MaxInFlight: 10})
	if err != nil {
		log.Fatalf("Subscribe: %v", err)
	}
	for handled := 0; handled < len(resp.Results); {
		batch, err := stream.Recv()
		if err != nil {
			log.Fatalf("Subscribe stream: %v", err)
		}
		for _, d := range batch.Deliveries {
			if json.Valid(d.Event.Payload) {
				_, err = events.Ack(ctx, &eventbusv1.AckRequest{Topic: topic, Subscription: sub, AckIds: []string{d.AckId}})
				fmt.Printf("acked %s (attempt %d)\n", d.Event.EventId, d.DeliveryAttempt)
			} else { // cannot process it: straight to the dead-letter queue
				_, err = events.Nack(ctx, &eventbusv1.NackRequest{Topic: topic, Subscription: sub,
					AckIds: []string{d.AckId}, DeadLetter: true, Reason: "payload is not JSON"})
				fmt.Printf("dead-lettered %s\n", d.Event.EventId)
			}
			if err != nil {
				log.Fatalf("settling %s: %v", d.AckId, err)
			}
			handled++
		}
	}
	stop() // leave the subscription

	dead, err := admin.ListDeadLetters(ctx, &eventbusv1.ListDeadLettersRequest{Topic: topic, Subscription: sub})
	if err != nil {
		log.Fatalf("ListDeadLetters: %v", err)
	}
	for _, dl := range dead.DeadLetters {
		fmt.Printf("dead letter %s: event %s, reason %q\n", dl.Id, dl.Event.EventId, dl.Reason)
	}
	if len(dead.DeadLetters) != 1 {
		log.Fatalf("expected 1 dead letter, got %d", len(dead.DeadLetters))
	}
}
