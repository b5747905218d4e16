package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "llmgateway.local/gen/llmgateway/v1"
)

// gatewayTarget calls llmgateway over several channels (one TCP connection
// each, as grpc-go does not share connections between ClientConns), so the
// connections spread over the gateway's worker processes as real clients' do.
type gatewayTarget struct {
	conns   []*grpc.ClientConn
	stubs   []pb.CompletionServiceClient
	next    atomic.Uint64
	unary   *pb.CompleteRequest
	streamd *pb.StreamCompleteRequest
	// Sent on every call, e.g. authorization: Bearer <key> for a keyed gateway.
	md metadata.MD
}

func newGatewayTarget(address string, channels int, pairs metadataPairs, model string) (*gatewayTarget, error) {
	t := &gatewayTarget{md: metadata.MD{}}
	for _, kv := range pairs {
		t.md.Append(kv[0], kv[1])
	}
	for i := 0; i < channels; i++ {
		// Dial does not connect yet: an unreachable address shows up as
		// UNAVAILABLE on the calls, which are counted, not as a crash here.
		conn, err := grpc.Dial(address, grpc.WithInsecure())
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("dial %s: %w", address, err)
		}
		t.conns = append(t.conns, conn)
		t.stubs = append(t.stubs, pb.NewCompletionServiceClient(conn))
	}
	messages := []*pb.ChatMessage{{Role: pb.Role_ROLE_USER, Content: Prompt}}
	t.unary = &pb.CompleteRequest{Model: model, Messages: messages}
	t.streamd = &pb.StreamCompleteRequest{Model: model, Messages: messages}
	return t, nil
}

func (t *gatewayTarget) stub() pb.CompletionServiceClient {
	return t.stubs[t.next.Add(1)%uint64(len(t.stubs))]
}

// statusError names a call's gRPC status code and message, as the samples show them.
func statusError(err error) error {
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("grpc %s: %s", codeName(s.Code()), s.Message())
	}
	return err
}

// codeNames spell the status codes as gRPC's specification and Python's
// grpc.StatusCode do (grpc-go's String() says "DeadlineExceeded", "Canceled").
var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

func codeName(code codes.Code) string {
	if int(code) < len(codeNames) {
		return codeNames[code]
	}
	return fmt.Sprintf("CODE_%d", uint32(code))
}

// context is a call's: its deadline (loadgen.py's 120 s) and the metadata.
func (t *gatewayTarget) context() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	if len(t.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, t.md)
	}
	return ctx, cancel
}

func (t *gatewayTarget) Unary() error {
	ctx, cancel := t.context()
	defer cancel()
	response, err := t.stub().Complete(ctx, t.unary)
	if err != nil {
		return statusError(err)
	}
	if response.GetContent() == "" {
		return errors.New("empty answer")
	}
	return nil
}

func (t *gatewayTarget) Stream() (time.Duration, int, error) {
	ctx, cancel := t.context()
	defer cancel()
	started := time.Now()
	stream, err := t.stub().StreamComplete(ctx, t.streamd)
	if err != nil {
		return 0, 0, statusError(err)
	}
	var first time.Duration
	chunks := 0
	done := false
	for {
		event, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, 0, statusError(err)
		}
		switch kind := event.GetEvent().(type) {
		case *pb.StreamCompleteResponse_ContentDelta:
			chunks += upstreamChunks(kind.ContentDelta.GetText())
			if first == 0 {
				first = time.Since(started)
			}
		case *pb.StreamCompleteResponse_Done:
			done = true
		}
	}
	if !done {
		return 0, 0, errors.New("stream ended without done")
	}
	return first, chunks, nil
}

func (t *gatewayTarget) Close() {
	for _, conn := range t.conns {
		conn.Close()
	}
}
