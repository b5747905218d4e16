package main

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
)

func TestUpstreamChunksCountsMergedChunks(t *testing.T) {
	cases := map[string]int{"tok ": 1, "tok tok tok ": 3, "hello": 1, "": 1, "tok tok": 1}
	for text, want := range cases {
		if got := upstreamChunks(text); got != want {
			t.Errorf("upstreamChunks(%q) = %d, want %d", text, got, want)
		}
	}
}

func TestTruncateKeepsUTF8Whole(t *testing.T) {
	s := strings.Repeat("é", 200) // two bytes each
	for n := 0; n < 40; n++ {
		got := truncate(s, n)
		if len(got) > n || !utf8.ValidString(got) {
			t.Fatalf("truncate(_, %d) = %q", n, got)
		}
	}
	if truncate("short", 300) != "short" {
		t.Fatal("a short string is kept whole")
	}
}

func TestFailKeepsFiveSamplesAndCountsAll(t *testing.T) {
	r := newResult(1)
	for i := 0; i < 8; i++ {
		r.fail(errors.New(strings.Repeat("x", 400)))
	}
	if r.Errors != 8 || len(r.ErrorSamples) != 5 || len(r.ErrorSamples[0]) != 300 {
		t.Fatalf("errors %d, samples %d", r.Errors, len(r.ErrorSamples))
	}
}

const sse = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n" +
	": keep-alive\n\n" +
	"data: {\"choices\":[{\"delta\":{\"content\":\"tok \"}}]}\n\n" +
	"data: {\"choices\":[{\"delta\":{\"content\":\"tok tok \"}}]}\n\n" +
	"data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n"

func TestReadSSECountsContentToDone(t *testing.T) {
	first, chunks, err := readSSE(strings.NewReader(sse+"data: [DONE]\n\n"), time.Now())
	if err != nil || chunks != 3 || first <= 0 {
		t.Fatalf("first %v, chunks %d, err %v", first, chunks, err)
	}
}

func TestReadSSEWithoutDoneIsAnError(t *testing.T) {
	if _, _, err := readSSE(strings.NewReader(sse), time.Now()); err == nil {
		t.Fatal("a stream cut before [DONE] must fail")
	}
	if _, _, err := readSSE(strings.NewReader("data: {oops\n\n"), time.Now()); err == nil {
		t.Fatal("a malformed event must fail")
	}
}

func TestParse(t *testing.T) {
	o, err := parse([]string{"--target", "portkey", "--mode", "stream", "--url", "http://x/v1",
		"--header", "x-portkey-provider: openai", "--header", "x-b:1:2"})
	if err != nil || o.concurrency != 1 || o.channels != 8 || o.waves != 1 || len(o.headers) != 2 ||
		o.headers[0] != [2]string{"x-portkey-provider", "openai"} || o.headers[1] != [2]string{"x-b", "1:2"} {
		t.Fatalf("%+v %v", o, err)
	}
	bad := [][]string{
		{"--mode", "unary"},
		{"--target", "gateway", "--mode", "both"},
		{"--target", "direct", "--mode", "unary"},
		{"--target", "gateway", "--mode", "unary", "--channels", "0"},
		{"--target", "gateway", "--mode", "unary", "--concurrency", "0"},
		{"--target", "direct", "--mode", "unary", "--url", "u", "--header", "nocolon"},
		{"--target", "gateway", "--mode", "unary", "--metadata", "=v"},
	}
	for _, args := range bad {
		if _, err := parse(args); err == nil {
			t.Errorf("parse(%q) accepted", args)
		}
	}
}

func TestCodeNameIsTheSpecificationsSpelling(t *testing.T) {
	cases := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.Unavailable: "UNAVAILABLE", codes.Unauthenticated: "UNAUTHENTICATED", codes.Code(99): "CODE_99",
	}
	for code, want := range cases {
		if got := codeName(code); got != want {
			t.Errorf("codeName(%d) = %q, want %q", code, got, want)
		}
	}
}

func TestMetadataIsLowerCasedAndNeverEchoed(t *testing.T) {
	o, err := parse([]string{"--target", "gateway", "--mode", "unary",
		"--metadata", "Authorization=Bearer k=1", "--gateway-model", "zai/glm-4.5"})
	if err != nil || len(o.metadata) != 1 || o.metadata[0] != [2]string{"authorization", "Bearer k=1"} ||
		o.gwModel != "zai/glm-4.5" {
		t.Fatalf("%+v %v", o, err)
	}
	for _, flag := range []string{"--metadata", "--header"} {
		_, err := parse([]string{"--target", "gateway", "--mode", "unary", flag, "sk-secret-value"})
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Fatalf("%s: error %v", flag, err)
		}
	}
}
