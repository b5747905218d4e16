// Command goload is the benchmark's load generator in Go: the same targets,
// modes, flags and JSON as bench/loadgen.py, so the figures it prints measure
// the server and not a Python client sharing the machine's cores with it.
// bench/goload.py builds it (GOPATH mode, Debian's Go packages, messages
// generated from protos/ at build time) and bench/__main__.py runs it.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
)

// headers collects repeated --header K:V flags.
type headers [][2]string

func (h *headers) String() string { return fmt.Sprint(len(*h), " headers") }

func (h *headers) Set(value string) error {
	name, val, ok := strings.Cut(value, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		// Kept as an empty name for parse to refuse: an error from here
		// would be printed by the flag package next to the value, which may
		// be a key.
		name, val = "", ""
	}
	*h = append(*h, [2]string{name, strings.TrimSpace(val)})
	return nil
}

// metadataPairs collects repeated --metadata K=V flags, as bench/loadgen.py's:
// the key lower-cased (gRPC requires it), the value as given (it may hold "=").
type metadataPairs [][2]string

func (m *metadataPairs) String() string { return fmt.Sprint(len(*m), " pairs") }

func (m *metadataPairs) Set(value string) error {
	key, val, ok := strings.Cut(value, "=")
	key = strings.ToLower(strings.TrimSpace(key))
	if !ok || key == "" {
		key, val = "", "" // refused by parse, not here: see headers.Set
	}
	*m = append(*m, [2]string{key, val})
	return nil
}

type options struct {
	target      string
	mode        string
	concurrency int
	requests    int
	duration    float64
	waves       int
	address     string
	channels    int
	metadata    metadataPairs
	gwModel     string
	url         string
	key         string
	model       string
	headers     headers
}

func parse(args []string) (options, error) {
	var o options
	flags := flag.NewFlagSet("goload", flag.ContinueOnError)
	flags.StringVar(&o.target, "target", "", "gateway (gRPC), or any name for an OpenAI-compatible HTTP target (direct, litellm, portkey, ...)")
	flags.StringVar(&o.mode, "mode", "", "unary or stream")
	flags.IntVar(&o.concurrency, "concurrency", 1, "callers (unary) or concurrent streams per wave (stream)")
	flags.IntVar(&o.requests, "requests", 0, "unary: calls in all (when --duration is 0)")
	flags.Float64Var(&o.duration, "duration", 0, "unary: seconds to call for (overrides --requests)")
	flags.IntVar(&o.waves, "waves", 1, "stream: how many times to start --concurrency streams together")
	flags.StringVar(&o.address, "address", "127.0.0.1:50051", "gateway: host:port")
	flags.IntVar(&o.channels, "channels", 8, "gateway: gRPC channels (one TCP connection each), shared round-robin")
	flags.Var(&o.metadata, "metadata", "gateway: gRPC metadata K=V sent on every call (repeatable)")
	flags.StringVar(&o.gwModel, "gateway-model", GatewayModel, "gateway: the model to ask for")
	flags.StringVar(&o.url, "url", "", "HTTP: the chat completions URL")
	flags.StringVar(&o.key, "key", "", "HTTP: bearer key")
	flags.StringVar(&o.model, "model", "openai/gpt-4o-mini", "HTTP: the model to ask for")
	flags.Var(&o.headers, "header", "HTTP: an extra request header K:V (repeatable)")
	if err := flags.Parse(args); err != nil {
		return o, err
	}
	for _, kv := range o.headers {
		if kv[0] == "" {
			return o, fmt.Errorf("--header: expected K:V with a non-empty K")
		}
	}
	for _, kv := range o.metadata {
		if kv[0] == "" {
			return o, fmt.Errorf("--metadata: expected K=V with a non-empty K")
		}
	}
	switch {
	case o.target == "":
		return o, fmt.Errorf("--target is required")
	case o.mode != "unary" && o.mode != "stream":
		return o, fmt.Errorf("--mode must be unary or stream, got %q", o.mode)
	case o.concurrency < 1:
		return o, fmt.Errorf("--concurrency must be at least 1")
	case o.waves < 1:
		return o, fmt.Errorf("--waves must be at least 1")
	case o.target == "gateway" && o.channels < 1:
		return o, fmt.Errorf("--channels must be at least 1")
	case o.target != "gateway" && o.url == "":
		return o, fmt.Errorf("--url is required for HTTP target %q", o.target)
	}
	return o, nil
}

func main() {
	// One P unless GOMAXPROCS says otherwise: on the benchmark's two shared
	// cores a second one mostly spins looking for work, CPU the measured
	// server then lacks (measured: 0.46 -> 0.31 ms of client CPU per unary
	// call at c=32, 2.1 -> 1.2 ms per 50-chunk stream), and one is far more
	// than the load needs.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	o, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "goload:", err)
		os.Exit(2)
	}
	var target Target
	if o.target == "gateway" {
		target, err = newGatewayTarget(o.address, o.channels, o.metadata, o.gwModel)
	} else {
		target = newHTTPTarget(o.url, o.key, o.model, o.headers, o.concurrency)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "goload:", err)
		os.Exit(2)
	}
	result := run(target, o)
	target.Close()
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		fmt.Fprintln(os.Stderr, "goload:", err)
		os.Exit(1)
	}
}
