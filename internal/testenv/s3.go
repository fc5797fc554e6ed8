package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
)

const (
	s3Access = "testaccess"
	s3Secret = "testsecret-0123456789"
)

// VersityGWBin finds the versitygw binary: $VERSITYGW_BIN, the cache directory that
// scripts/install-versitygw.sh fills, or PATH.
func VersityGWBin() (string, error) {
	if p := os.Getenv("VERSITYGW_BIN"); p != "" {
		return p, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "iotsupport", "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("versitygw not found; install it with: bash scripts/install-versitygw.sh")
}

// S3Server is a versitygw process serving a directory.
type S3Server struct {
	Endpoint string
	dir      string
	addr     string
	cmd      *exec.Cmd
	mu       sync.Mutex
}

// FreePort returns a free loopback address.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartS3Server runs versitygw on a free port over dir.
func StartS3Server(dir string) (*S3Server, error) {
	addr, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &S3Server{dir: dir, addr: addr, Endpoint: "http://" + addr}
	return s, s.Start()
}

// Start (re)starts the process on the same address and directory.
func (s *S3Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	bin, err := VersityGWBin()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "--access", s3Access, "--secret", s3Secret, "--port", s.addr, "posix", s.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw: %w", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return fmt.Errorf("versitygw did not answer on %s", s.addr)
}

// Stop kills the process (an outage); Start brings it back with the same data.
func (s *S3Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_, _ = s.cmd.Process.Wait()
		s.cmd = nil
	}
}

// Config returns a store configuration for bucket on this server.
func (s *S3Server) Config(bucket string) blob.S3Config {
	return blob.S3Config{Endpoint: s.Endpoint, AccessKeyID: s3Access, SecretAccessKey: s3Secret, Bucket: bucket, Region: "us-east-1", PathStyle: true}
}

var (
	sharedOnce sync.Once
	shared     *S3Server
	sharedErr  error
)

// S3 returns a configuration for a fresh bucket on a versitygw shared by the test
// binary (started on first use; it dies with the binary). Missing versitygw fails the test.
func S3(t testing.TB) blob.S3Config {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "iotsupport-versitygw-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = StartS3Server(dir)
	})
	if sharedErr != nil {
		t.Fatalf("real S3 server needed: %v", sharedErr)
	}
	cfg := shared.Config(strings.ReplaceAll(randomName("b-"), "_", "-"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if st, err := blob.NewS3(ctx, cfg); err == nil {
			_ = blob.Walk(ctx, st, "", func(i blob.Info) error { return st.Delete(ctx, i.Key) })
		}
	})
	return cfg
}

// StoppableS3 runs a versitygw of the test's own, so the test can stop and restart it.
func StoppableS3(t testing.TB) (*S3Server, blob.S3Config) {
	t.Helper()
	srv, err := StartS3Server(t.TempDir())
	if err != nil {
		t.Fatalf("real S3 server needed: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv, srv.Config(strings.ReplaceAll(randomName("b-"), "_", "-"))
}
