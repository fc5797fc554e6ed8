// Package proctest builds the iotsupport binary and runs it as a subprocess, for
// tests that need a real process: start-up, signals, kills and restarts.
package proctest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestHooksTag is the build tag of the binary's test-only hooks (crash points
// set through IOTSUPPORT_TEST_* variables); production builds leave it out.
const TestHooksTag = "iotsupport_testhooks"

// Binary builds ./cmd/iotsupport with TestHooksTag once per test binary and
// returns its path. The hooks do nothing unless their variables are set.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "iotsupport-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "iotsupport")
		cmd := exec.Command("go", "build", "-tags", TestHooksTag, "-o", binPath, "./cmd/iotsupport")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Env returns the environment for a subprocess using env's database and store.
func Env(env *testenv.Env, extra ...string) []string {
	vars := []string{"DATABASE_URL=" + env.DatabaseURL, "LOG_LEVEL=info", "LOG_FORMAT=json"}
	if env.S3 != nil {
		vars = append(vars, "STORAGE_BACKEND=s3", "S3_ENDPOINT_URL="+env.S3.Endpoint, "S3_ACCESS_KEY_ID="+env.S3.AccessKeyID,
			"S3_SECRET_ACCESS_KEY="+env.S3.SecretAccessKey, "S3_BUCKET_NAME="+env.S3.Bucket)
	} else {
		vars = append(vars, "STORAGE_BACKEND=local", "STORAGE_DIR="+env.StoreDir)
	}
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	return append(append(base, vars...), extra...)
}

// Proc is a running server.
type Proc struct {
	Cmd    *exec.Cmd
	URL    string
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
	err    error
}

// Output is what the process wrote to stderr so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Start runs `iotsupport serve` on a free port and waits until /health/healthz answers.
func Start(t testing.TB, environ []string, args ...string) *Proc {
	t.Helper()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(Binary(t), append([]string{"serve"}, args...)...)
	cmd.Env = append(withCacheDir(t, environ), "HOST="+host, "PORT="+port)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, _ := cmd.StderrPipe()
	cmd.Stdout = io.Discard
	p := &Proc{Cmd: cmd, URL: "http://" + addr, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.Kill() })
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("server exited during start-up: %v\n%s", p.err, p.Output())
		default:
		}
		resp, err := http.Get(p.URL + "/health/healthz")
		if err == nil {
			resp.Body.Close()
			return p
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server did not start:\n%s", p.Output())
	return nil
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	if p.Cmd.Process != nil {
		_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for the exit; it returns the exit error.
func (p *Proc) Stop(timeout time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return context.DeadlineExceeded
	}
}

// Run runs a one-shot sub-command and returns its stdout, stderr and exit code.
func Run(t testing.TB, environ []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = withCacheDir(t, environ)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// withCacheDir keeps the firmware cache of S3 subprocesses out of the working
// directory (its default is ./data/cache): a temp dir per process unless the
// environment names one.
func withCacheDir(t testing.TB, environ []string) []string {
	for _, kv := range environ {
		if strings.HasPrefix(kv, "FIRMWARE_CACHE_DIR=") {
			return environ
		}
	}
	return append(environ[:len(environ):len(environ)], "FIRMWARE_CACHE_DIR="+t.TempDir())
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
