package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/smithy-go"

	"github.com/iotsupport/iotsupport/internal/config"
)

// Preflight checks what start-up needs before anything is changed (migrations, a
// created directory or bucket): that the storage directory and TEMP_DIR can be written
// and that the S3 endpoint answers. Each failure is one line naming the setting.
func Preflight(ctx context.Context, cfg *config.Config) error {
	if cfg.StorageBackend == "s3" {
		if err := reachS3(ctx, cfg); err != nil {
			return err
		}
	} else if err := writableDir(cfg.StorageDir); err != nil {
		return fmt.Errorf("STORAGE_DIR=%s: %w", cfg.StorageDir, err)
	}
	if cfg.TempDir != "" {
		// Like STORAGE_DIR it may be missing (New creates it, e.g. on a fresh /data volume).
		if err := writableDir(cfg.TempDir); err != nil {
			return fmt.Errorf("TEMP_DIR=%s: %w", cfg.TempDir, err)
		}
	}
	return nil
}

// writableDir checks that dir exists as a writable directory or could be created: its
// nearest existing ancestor must be a directory in which a file can be made (a probe
// that is removed at once; permission bits alone say nothing for root or read-only mounts).
func writableDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	p := abs
	for {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", p)
			}
			break
		}
		// ENOTDIR: some ancestor is a file; walking up finds and names it.
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("cannot use %s: %v", p, pathErr(err))
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("no existing parent directory")
		}
		p = parent
	}
	f, err := os.CreateTemp(p, ".iotsupport-preflight-")
	if err != nil {
		return fmt.Errorf("%s is not writable: %v", p, pathErr(err))
	}
	f.Close()
	_ = os.Remove(f.Name())
	return nil
}

// pathErr drops the path an *fs.PathError repeats.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// reachS3 opens a TCP connection to the S3 endpoint, so an unreachable server is one
// clear line instead of the SDK's retry report.
func reachS3(ctx context.Context, cfg *config.Config) error {
	endpoint := cfg.S3Endpoint
	if endpoint == "" && cfg.S3AccessKey == "" {
		// Neither a server nor AWS credentials: almost surely settings that did not arrive.
		return fmt.Errorf("STORAGE_BACKEND=s3: S3_ENDPOINT_URL is required (or, for AWS, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY)")
	}
	if endpoint == "" {
		endpoint = "https://s3." + cfg.S3Region + ".amazonaws.com"
	}
	hostPort, err := s3HostPort(endpoint, cfg.S3UseSSL)
	if err != nil {
		return fmt.Errorf("S3_ENDPOINT_URL=%s: %v", cfg.S3Endpoint, err)
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(dctx, "tcp", hostPort)
	if err != nil {
		return fmt.Errorf("object storage: S3 endpoint %s is unreachable: %v", endpoint, netCause(err))
	}
	c.Close()
	return nil
}

func s3HostPort(endpoint string, useSSL bool) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		// host:port without a scheme, as S3_USE_SSL allows.
		scheme := "http://"
		if useSSL {
			scheme = "https://"
		}
		if u, err = url.Parse(scheme + endpoint); err != nil || u.Host == "" {
			return "", fmt.Errorf("not a URL or host:port")
		}
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// netCause is the innermost reason of a network error ("connection refused", "no such host").
func netCause(err error) error {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("cannot resolve %s", dnsErr.Name)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		if se, ok := opErr.Err.(*os.SyscallError); ok {
			return se.Err
		}
		return opErr.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("no answer within 5s")
	}
	return err
}

// storeCause shortens an object-store error to what an operator acts on: the S3
// error code and message, or the network failure, rather than the SDK's whole chain.
// The original stays reachable through errors.Is/As.
func storeCause(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg := "S3 answered " + ae.ErrorCode()
		if m := ae.ErrorMessage(); m != "" {
			msg += ": " + m
		}
		return &shortErr{msg: msg, err: err}
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if errors.As(err, &opErr) || errors.As(err, &dnsErr) {
		return &shortErr{msg: netCause(err).Error(), err: err}
	}
	return err
}

type shortErr struct {
	msg string
	err error
}

func (e *shortErr) Error() string { return e.msg }
func (e *shortErr) Unwrap() error { return e.err }
