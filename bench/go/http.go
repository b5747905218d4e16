package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// httpTarget speaks OpenAI chat completions: the fake upstream itself, or a
// peer gateway (LiteLLM, Portkey, ...) in front of it.
type httpTarget struct {
	client     *http.Client
	url        string
	headers    http.Header
	unaryBody  []byte
	streamBody []byte
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model         string         `json:"model"`
	Messages      []chatMessage  `json:"messages"`
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions map[string]any `json:"stream_options,omitempty"`
}

func newHTTPTarget(url, key, model string, extra headers, connections int) *httpTarget {
	messages := []chatMessage{{Role: "user", Content: Prompt}}
	unary, _ := json.Marshal(chatRequest{Model: model, Messages: messages})
	stream, _ := json.Marshal(chatRequest{
		Model: model, Messages: messages, Stream: true,
		StreamOptions: map[string]any{"include_usage": true},
	})
	h := http.Header{}
	h.Set("Authorization", "Bearer "+key)
	h.Set("Content-Type", "application/json")
	for _, kv := range extra {
		h.Set(kv[0], kv[1])
	}
	// One kept-alive connection per concurrent caller (net/http keeps only 2
	// idle per host by default, which would reconnect on almost every call).
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        connections + 16,
		MaxIdleConnsPerHost: connections + 16,
		IdleConnTimeout:     90 * time.Second,
	}
	return &httpTarget{
		client:     &http.Client{Transport: transport, Timeout: callTimeout},
		url:        url,
		headers:    h,
		unaryBody:  unary,
		streamBody: stream,
	}
}

func (t *httpTarget) post(body []byte) (*http.Response, error) {
	request, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	request.Header = t.headers.Clone()
	return t.client.Do(request)
}

type unaryAnswer struct {
	Choices []struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
}

func (t *httpTarget) Unary() error {
	response, err := t.post(t.unaryBody)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return err
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %q", response.StatusCode, truncate(string(body), 200))
	}
	var answer unaryAnswer
	if err := json.Unmarshal(body, &answer); err != nil {
		return fmt.Errorf("bad answer: %w", err)
	}
	if len(answer.Choices) == 0 || answer.Choices[0].Message.Content == "" {
		return errors.New("empty answer")
	}
	return nil
}

func (t *httpTarget) Stream() (time.Duration, int, error) {
	started := time.Now()
	response, err := t.post(t.streamBody)
	if err != nil {
		return 0, 0, err
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(response.Body, 200))
		return 0, 0, fmt.Errorf("HTTP %d: %q", response.StatusCode, string(body))
	}
	return readSSE(response.Body, started)
}

type streamChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
}

// readSSE reads an OpenAI chat completions event stream to its [DONE]: the
// time from started to the first content and the upstream chunks it held.
func readSSE(body io.Reader, started time.Time) (time.Duration, int, error) {
	lines := bufio.NewScanner(body)
	lines.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	var first time.Duration
	chunks := 0
	for lines.Scan() {
		line := lines.Bytes()
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		data := bytes.TrimSpace(line[6:])
		if bytes.Equal(data, []byte("[DONE]")) {
			return first, chunks, nil
		}
		var chunk streamChunk
		if err := json.Unmarshal(data, &chunk); err != nil {
			return 0, 0, fmt.Errorf("bad event %q: %w", truncate(string(data), 100), err)
		}
		if len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
			chunks += upstreamChunks(chunk.Choices[0].Delta.Content)
			if first == 0 {
				first = time.Since(started)
			}
		}
	}
	if err := lines.Err(); err != nil {
		return 0, 0, err
	}
	return 0, 0, errors.New("stream ended without [DONE]")
}

func (t *httpTarget) Close() {
	t.client.CloseIdleConnections()
}
