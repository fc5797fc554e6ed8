package decoding

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotsupport/iotsupport/internal/espcore"
)

// Sidecar decodes through the older service's HTTP sidecar protocol: both files are
// written to a shared directory under per-dump names, then
// GET {url}/parse-coredump?core=…&elf=…&chip=… answers {"output": "..."}.
type Sidecar struct {
	URL     string
	XferDir string
	Client  *http.Client
	// Attempts within one job, with backoff between them; the job itself retries later.
	Attempts int
	Backoff  time.Duration
}

// NewSidecar returns a sidecar decoder with a per-request timeout.
func NewSidecar(baseURL, xferDir string, timeout time.Duration) *Sidecar {
	return &Sidecar{URL: strings.TrimRight(baseURL, "/"), XferDir: xferDir, Client: &http.Client{Timeout: timeout},
		Attempts: 3, Backoff: 500 * time.Millisecond}
}

// Decode implements Decoder. The report is text only (the sidecar gives no structure).
func (s *Sidecar) Decode(ctx context.Context, in Input) (string, *espcore.Report, error) {
	if err := os.MkdirAll(s.XferDir, 0o755); err != nil {
		return "", nil, transient(fmt.Errorf("sidecar transfer directory: %w", err))
	}
	core := fmt.Sprintf("coredump_%d.dmp", in.CoredumpID)
	elf := fmt.Sprintf("coredump_%d.elf", in.CoredumpID)
	corePath, elfPath := filepath.Join(s.XferDir, core), filepath.Join(s.XferDir, elf)
	defer os.Remove(corePath)
	defer os.Remove(elfPath)
	if err := os.WriteFile(corePath, in.Dump, 0o644); err != nil {
		return "", nil, transient(err)
	}
	if err := os.WriteFile(elfPath, in.ELF, 0o644); err != nil {
		return "", nil, transient(err)
	}
	q := url.Values{"core": {core}, "elf": {elf}, "chip": {in.Chip}}
	var last error
	for attempt := 0; attempt < max(s.Attempts, 1); attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return "", nil, ctx.Err()
			case <-time.After(s.Backoff << (attempt - 1)):
			}
		}
		out, err := s.call(ctx, q)
		if err == nil {
			return out, nil, nil
		}
		last = err
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
	}
	return "", nil, transient(fmt.Errorf("sidecar failed: %w", last))
}

func (s *Sidecar) call(ctx context.Context, q url.Values) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/parse-coredump?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("sidecar answered %d: %.200s", resp.StatusCode, body)
	}
	var v struct {
		Output *string `json:"output"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", errors.New("sidecar answered with a body that is not JSON")
	}
	if v.Output == nil {
		return "", nil
	}
	return *v.Output, nil
}
