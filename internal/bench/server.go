package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a `serve` process started by the benchmark.
type child struct {
	cmd     *exec.Cmd
	url     string
	token   string
	done    chan struct{}
	logTail *tailBuffer
}

var tokenLine = regexp.MustCompile(`^\s+(\S{20,})\s*$`)

// startChild runs `exe serve` with env (KEY=VALUE) added to the environment,
// on a free loopback port, and waits until it answers /health/healthz. It
// returns the initial admin token printed on first start, or on a database used
// before, one made with `token create`.
func startChild(ctx context.Context, exe string, env []string, dir string) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "serve")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port), "LOG_LEVEL=warn"}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", exe, err)
	}
	c := &child{cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan struct{}), logTail: &tailBuffer{}}
	tokc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			c.logTail.add(line)
			if strings.Contains(line, "First start: created API token") {
				seen = true
				continue
			}
			if m := tokenLine.FindStringSubmatch(line); seen && m != nil {
				seen = false
				select {
				case tokc <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { _ = cmd.Wait(); close(c.done) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-c.done:
			return nil, fmt.Errorf("server exited during start-up:\n%s", c.logTail.String())
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("server did not become healthy within 60s:\n%s", c.logTail.String())
		}
		resp, err := http.Get(c.url + "/health/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case c.token = <-tokc:
	case <-time.After(5 * time.Second):
		// Not a fresh database: make our own admin token with the same settings.
		tok := exec.CommandContext(ctx, exe, "token", "create", "--name", fmt.Sprintf("bench-%d", time.Now().UnixNano()), "--role", "admin")
		tok.Dir, tok.Env = dir, cmd.Env
		out, err := tok.Output()
		fields := strings.Fields(string(out))
		if err != nil || len(fields) == 0 {
			c.stop()
			return nil, fmt.Errorf("no initial admin token printed and `token create` failed: %v %s", err, out)
		}
		c.token = fields[len(fields)-1]
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM and waits up to 15s, then kills.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last lines of the child's log for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	if len(t.lines) > 40 {
		t.lines = t.lines[len(t.lines)-40:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// procStatus reads VmRSS and VmHWM (bytes) of pid from /proc.
func procStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm, nil
}

// rssSampler records the peak VmRSS of a process while running (VmHWM is
// the whole life's peak, so per-scenario peaks are sampled).
type rssSampler struct {
	pid  int
	stop chan struct{}
	done chan struct{}
	peak int64
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	if pid <= 0 {
		close(s.done)
		return s
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _, err := procStatus(pid); err == nil && rss > s.peak {
				s.peak = rss
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Peak stops sampling and returns the peak RSS in bytes (0: not sampled).
func (s *rssSampler) Peak() int64 {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return s.peak
}

// api is a small admin client.
type api struct {
	base  string
	token string
	hc    *http.Client
}

func (a *api) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// createModel creates a device model and returns its id.
func (a *api) createModel(ctx context.Context, code string) (int64, error) {
	var out struct {
		ID int64 `json:"id"`
	}
	err := a.do(ctx, http.MethodPost, "/api/device-models", map[string]string{"code": code, "name": "bench " + code}, &out)
	return out.ID, err
}

// device is a device's credentials.
type device struct {
	ID     int64
	Key    string
	Secret string
}

func (a *api) createDevice(ctx context.Context, modelID int64) (device, error) {
	var out struct {
		ID     int64  `json:"id"`
		Key    string `json:"key"`
		Secret string `json:"secret"`
	}
	err := a.do(ctx, http.MethodPost, "/api/devices", map[string]any{"device_model_id": modelID, "config": "{}"}, &out)
	return device{out.ID, out.Key, out.Secret}, err
}

// uploadBundle posts a bundle ZIP to a model (replace=true overwrites).
func (a *api) uploadBundle(ctx context.Context, modelID int64, zip []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("%s/api/device-models/%d/firmware?replace=true", a.base, modelID), bytes.NewReader(zip))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/zip")
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("upload bundle: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}
