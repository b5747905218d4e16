package main

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
)

// codec is gRPC's "proto" codec on the protobuf APIv2 runtime the generated
// messages use. Debian's gRPC (1.33) builds its own against the v1.3
// github.com/golang/protobuf, whose reflection cannot decode APIv2 messages
// (it panics on their oneofs), so this one replaces it by name.
type codec struct{}

func (codec) Marshal(v interface{}) ([]byte, error) {
	message, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("codec: %T is not a protobuf message", v)
	}
	return proto.Marshal(message)
}

func (codec) Unmarshal(data []byte, v interface{}) error {
	message, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec: %T is not a protobuf message", v)
	}
	return proto.Unmarshal(data, message)
}

func (codec) Name() string { return "proto" }

func init() { encoding.RegisterCodec(codec{}) }
