package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Prompt and GatewayModel are bench/loadgen.py's, so both clients ask the same.
const (
	Prompt       = "Say hello."
	GatewayModel = "openrouter/openai/gpt-4o-mini"
	callTimeout  = 120 * time.Second
	warmUpCalls  = 20
	maxSamples   = 5
	maxSampleLen = 300
)

// Target is one way to make a call.
type Target interface {
	Unary() error
	// Stream returns the time to the first content chunk (0 when none came)
	// and the number of upstream content chunks received.
	Stream() (time.Duration, int, error)
	Close()
}

// Result holds bench/loadgen.py's keys (times in seconds), plus the load
// generator's own CPU during the measured load.
type Result struct {
	Latencies        []float64 `json:"latencies"`
	Ttfts            []float64 `json:"ttfts"`
	Errors           int       `json:"errors"`
	ErrorSamples     []string  `json:"error_samples"`
	Chunks           int       `json:"chunks"`
	Wall             float64   `json:"wall"`
	Waves            int       `json:"waves"`
	ClientCPUSeconds float64   `json:"client_cpu_seconds"`

	mu sync.Mutex
}

func newResult(waves int) *Result {
	return &Result{Latencies: []float64{}, Ttfts: []float64{}, ErrorSamples: []string{}, Waves: waves}
}

func (r *Result) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Errors++
	if len(r.ErrorSamples) < maxSamples {
		r.ErrorSamples = append(r.ErrorSamples, truncate(err.Error(), maxSampleLen))
	}
}

func (r *Result) succeed(latency time.Duration) {
	r.mu.Lock()
	r.Latencies = append(r.Latencies, latency.Seconds())
	r.mu.Unlock()
}

func (r *Result) streamed(latency, first time.Duration, chunks int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Latencies = append(r.Latencies, latency.Seconds())
	if first > 0 { // a stream without content has no time to first token
		r.Ttfts = append(r.Ttfts, first.Seconds())
	}
	r.Chunks += chunks
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence, so
// the JSON stays valid text.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}

// upstreamChunks is how many of the fake upstream's chunks ("tok " each) text
// holds: the gateway may merge chunks that arrived together into one message.
func upstreamChunks(text string) int {
	if n := strings.Count(text, "tok "); n > 0 {
		return n
	}
	return 1
}

// cpuSeconds is this process's user plus system CPU so far.
func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

// warmUp makes calls one at a time, as bench/loadgen.py does, so connections
// are open before the clock starts. Its failures are not counted (the load
// that follows meets the same ones); the first stops it, so an unreachable
// target does not wait out twenty failures, and is reported on stderr.
func warmUp(target Target, mode string) {
	for i := 0; i < warmUpCalls; i++ {
		var err error
		if mode == "unary" {
			err = target.Unary()
		} else {
			_, _, err = target.Stream()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "goload: warm-up call failed:", err)
			return
		}
	}
}

func run(target Target, o options) *Result {
	warmUp(target, o.mode)
	cpu := cpuSeconds()
	var result *Result
	if o.mode == "unary" {
		result = runUnary(target, o.concurrency, o.requests, o.duration)
	} else {
		result = runStreams(target, o.concurrency, o.waves)
	}
	result.ClientCPUSeconds = cpuSeconds() - cpu
	return result
}

// runUnary runs concurrency callers in a loop, for requests calls in all or
// for duration seconds.
func runUnary(target Target, concurrency, requests int, duration float64) *Result {
	result := newResult(1)
	var remaining atomic.Int64
	remaining.Store(int64(requests))
	started := time.Now()
	deadline := started.Add(time.Duration(duration * float64(time.Second)))
	var wg sync.WaitGroup
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if duration > 0 {
					if !time.Now().Before(deadline) {
						return
					}
				} else if remaining.Add(-1) < 0 {
					return
				}
				begun := time.Now()
				if err := target.Unary(); err != nil {
					result.fail(err)
					continue
				}
				result.succeed(time.Since(begun))
			}
		}()
	}
	wg.Wait()
	result.Wall = time.Since(started).Seconds()
	return result
}

// runStreams starts concurrency streams together, waves times; the wall time
// is the sum of the waves'.
func runStreams(target Target, concurrency, waves int) *Result {
	result := newResult(waves)
	for w := 0; w < waves; w++ {
		started := time.Now()
		var wg sync.WaitGroup
		for i := 0; i < concurrency; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				begun := time.Now()
				first, chunks, err := target.Stream()
				if err != nil {
					result.fail(err)
					return
				}
				result.streamed(time.Since(begun), first, chunks)
			}()
		}
		wg.Wait()
		result.Wall += time.Since(started).Seconds()
	}
	return result
}
