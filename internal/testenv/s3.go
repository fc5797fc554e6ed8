package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotsupport/iotsupport/internal/blob"
)

// Credentials of the test servers; versitygw wants a secret of some length.
const (
	s3Access = "testaccess"
	s3Secret = "testsecret-0123456789"
)

// VersityGWInstall is the exact command that provides the binary the tests need.
const VersityGWInstall = "bash scripts/install-versitygw.sh   (from the repository root; it runs " +
	"GOBIN=${XDG_CACHE_HOME:-$HOME/.cache}/iotsupport/bin go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)"

// VersityGWBin finds the versitygw binary: $VERSITYGW_BIN, the cache directory that
// scripts/install-versitygw.sh fills, or PATH.
func VersityGWBin() (string, error) {
	if p := os.Getenv("VERSITYGW_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("VERSITYGW_BIN=%s: %v; install it with: %s", p, err, VersityGWInstall)
		}
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
	return "", fmt.Errorf("versitygw (the real S3 server for tests) not found in $VERSITYGW_BIN, %s or PATH; install it with: %s", p, VersityGWInstall)
}

// S3Server is a versitygw process serving a directory on a fixed address, so a
// restart keeps both the endpoint and the data.
type S3Server struct {
	Endpoint string
	dir      string
	addr     string

	mu   sync.Mutex
	proc *os.Process
	done chan struct{} // closed when the current process has exited
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartS3Server runs versitygw over dir on a free port. Another process may grab the
// port between probe and bind; that shows as an early exit, so try a few ports.
func StartS3Server(dir string) (*S3Server, error) {
	var err error
	for range 3 {
		var addr string
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
		s := &S3Server{dir: dir, addr: addr, Endpoint: "http://" + addr}
		if err = s.Start(); err == nil {
			return s, nil
		}
	}
	return nil, err
}

// Start (re)starts the process on the same address and directory and waits until it
// answers HTTP.
func (s *S3Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	bin, err := VersityGWBin()
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "--access", s3Access, "--secret", s3Secret, "--port", s.addr, "posix", s.dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	// The kernel kills the server when the test binary dies, however it dies (panic,
	// timeout, SIGKILL), so no TestMain is needed. Pdeathsig fires when the *thread* that
	// forked exits, so fork from a locked thread that lives exactly as long as the child.
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
		// Returning without unlocking ends this thread, which is harmless now.
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	s.proc, s.done = cmd.Process, done
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			s.proc = nil
			return fmt.Errorf("versitygw on %s exited at start-up: %s", s.addr, strings.TrimSpace(out.String()))
		default:
		}
		if resp, err := client.Get(s.Endpoint + "/"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stopLocked()
	return fmt.Errorf("versitygw did not answer on %s within 20s: %s", s.addr, strings.TrimSpace(out.String()))
}

// Stop kills the process (a crash, as far as clients can tell) and waits for it to go.
func (s *S3Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *S3Server) stopLocked() {
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill()
	<-s.done
	s.proc = nil
}

// Config returns a store configuration for bucket on this server (NewS3 creates it).
func (s *S3Server) Config(bucket string) blob.S3Config {
	return blob.S3Config{Endpoint: s.Endpoint, AccessKeyID: s3Access, SecretAccessKey: s3Secret,
		Bucket: bucket, Region: "us-east-1", PathStyle: true}
}

// bucketName is unique per call and valid for S3 (lowercase letters, digits, '-').
func bucketName() string { return randomName("t-") }

const sharedDirPrefix = "iotsupport-versitygw-"

var (
	sharedOnce sync.Once
	shared     *S3Server
	sharedErr  error
)

// S3 returns the configuration of a fresh, unique bucket (created by blob.NewS3) on the
// versitygw that this test binary shares. The server starts on first use and dies with
// the binary; the bucket's files are removed when the test ends. A missing versitygw
// fails the test with the install command; it is never skipped.
func S3(t testing.TB) blob.S3Config {
	t.Helper()
	sharedOnce.Do(func() {
		removeStaleDirs()
		dir, err := os.MkdirTemp("", sharedDirPrefix+strconv.Itoa(os.Getpid())+"-")
		if err != nil {
			sharedErr = err
			return
		}
		if shared, sharedErr = StartS3Server(dir); sharedErr != nil {
			os.RemoveAll(dir)
		}
	})
	if sharedErr != nil {
		t.Fatalf("a real S3 server is required: %v", sharedErr)
	}
	bucket := bucketName()
	// The posix backend keeps a bucket as one directory: removing it is the cheapest
	// cleanup and leaves nothing behind for the next test.
	t.Cleanup(func() { os.RemoveAll(filepath.Join(shared.dir, bucket)) })
	return shared.Config(bucket)
}

// removeStaleDirs deletes data directories of shared servers whose test binary has
// exited (their servers died with them), so runs do not pile up in the temp dir.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), sharedDirPrefix+"*"))
	for _, d := range dirs {
		rest := strings.TrimPrefix(filepath.Base(d), sharedDirPrefix)
		parts := strings.SplitN(rest, "-", 2)
		if len(parts) != 2 {
			continue
		}
		pid, err := strconv.Atoi(parts[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

// StoppableS3 runs a versitygw of this test's own and returns a bucket configuration
// with stop (kill the server: an outage) and start (bring it back on the same port with
// the same data). Both must be called from the test's goroutine; start fails the test
// if the server cannot come back. The server is stopped when the test ends.
func StoppableS3(t testing.TB) (cfg blob.S3Config, stop func(), start func()) {
	t.Helper()
	srv, err := StartS3Server(t.TempDir())
	if err != nil {
		t.Fatalf("a real S3 server is required: %v", err)
	}
	t.Cleanup(srv.Stop)
	start = func() {
		t.Helper()
		if err := srv.Start(); err != nil {
			t.Fatalf("restart versitygw: %v", err)
		}
	}
	return srv.Config(bucketName()), srv.Stop, start
}
