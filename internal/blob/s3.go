package blob

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3Config addresses a bucket on any S3-compatible service.
type S3Config struct {
	Endpoint        string // host:port or URL; empty means AWS
	AccessKeyID     string // empty means anonymous requests
	SecretAccessKey string
	Bucket          string
	Region          string // default us-east-1
	UseSSL          bool   // scheme for an Endpoint given without one
	PathStyle       bool   // required by most self-hosted servers
}

// S3 stores objects in one bucket.
type S3 struct {
	client *s3.Client
	bucket string
	// singleDeletes: the server answered DeleteObjects with "not implemented".
	singleDeletes atomic.Bool
}

// NewS3 connects and creates the bucket when it is missing. opts adjust the client
// (tests use them to shorten timeouts or swap the HTTP client).
func NewS3(ctx context.Context, cfg S3Config, opts ...func(*s3.Options)) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: bucket name is required")
	}
	endpoint := cfg.Endpoint
	if endpoint != "" && !strings.Contains(endpoint, "://") {
		if cfg.UseSSL {
			endpoint = "https://" + endpoint
		} else {
			endpoint = "http://" + endpoint
		}
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	// No overall client timeout: bodies of any size stream through. Connecting and the
	// wait for response headers are bounded instead, so a dead server fails in seconds.
	httpClient := &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialAbortive((&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext),
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}}
	o := s3.Options{
		Region:       region,
		UsePathStyle: cfg.PathStyle,
		HTTPClient:   httpClient,
		// Other S3 implementations reject or mishandle the newer default checksums.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		// Few, quick retries: an outage should surface as 503 within seconds, not minutes.
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.MaxBackoff = 500 * time.Millisecond
		}),
	}
	if cfg.AccessKeyID != "" {
		o.Credentials = credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")
	}
	if endpoint != "" {
		o.BaseEndpoint = aws.String(endpoint)
	}
	s := &S3{client: s3.New(o, opts...), bucket: cfg.Bucket}
	where := endpoint
	if where == "" {
		where = "AWS " + region
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := s.client.HeadBucket(cctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err == nil {
		return s, nil
	}
	if !isNotFound(err) {
		return nil, fmt.Errorf("check bucket %s at %s: %w", cfg.Bucket, where, mapErr(err))
	}
	_, err = s.client.CreateBucket(cctx, &s3.CreateBucketInput{Bucket: &s.bucket})
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	switch {
	case err == nil, errors.As(err, &owned):
	case errors.As(err, &exists):
		// Lost a creation race, or the name belongs to someone else: usable only if we can see it.
		if _, herr := s.client.HeadBucket(cctx, &s3.HeadBucketInput{Bucket: &s.bucket}); herr != nil {
			return nil, fmt.Errorf("create bucket %s at %s: %w", cfg.Bucket, where, mapErr(err))
		}
	default:
		return nil, fmt.Errorf("create bucket %s at %s: %w", cfg.Bucket, where, mapErr(err))
	}
	return s, nil
}

// dialAbortive makes closing a connection send a TCP reset instead of a normal end of
// stream. The transport closes the connection when an upload's body fails; a server
// then sees an error, not what looks like a complete (shorter) body. (versitygw v1.8.0
// sometimes stores such a truncated body as the object.)
func dialAbortive(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return c, err
	}
}

// Client exposes the SDK client for administrative tasks outside the Store contract.
func (s *S3) Client() *s3.Client { return s.client }

// Bucket is the bucket's name.
func (s *S3) Bucket() string { return s.bucket }

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var nsb *types.NoSuchBucket
	if errors.As(err, &nsk) || errors.As(err, &nf) || errors.As(err, &nsb) {
		return true
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchBucket", "404":
			return true
		}
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

func isNoSuchBucket(err error) bool {
	var nsb *types.NoSuchBucket
	var ae smithy.APIError
	return errors.As(err, &nsb) || errors.As(err, &ae) && ae.ErrorCode() == "NoSuchBucket"
}

// mapErr turns SDK errors into our sentinels: missing object → ErrNotFound, bad range →
// ErrInvalidRange, cancellation stays itself, anything else (network, 5xx, timeouts,
// auth, a vanished bucket) → ErrUnavailable. The SDK error stays in the chain.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return err
	case isNoSuchBucket(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case isNotFound(err):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	if errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange" ||
		errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable {
		return fmt.Errorf("%w: %w", ErrInvalidRange, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Put streams r with a known length: no buffering, no seeking, so a file, a request body
// or a pipe all work. A short, long or failing reader aborts the request.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := checkSize(size); err != nil {
		return err
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	src := newExactReader(r, size)
	if size == 0 {
		// An empty body is never read by the transport, so check for extra bytes here.
		if _, err := src.Read(make([]byte, 1)); err != io.EOF {
			return fmt.Errorf("put %s: %w", key, err)
		}
	}
	// Hide any Seek method: the SDK must treat the body as a one-shot stream.
	body := struct{ io.Reader }{src}
	// The upload id tells our own aborted upload apart from an older or concurrent object.
	id := rand.Text()
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: body, ContentLength: aws.Int64(size), ContentType: &contentType,
		Metadata: map[string]string{uploadIDMeta: id}}
	_, err := s.client.PutObject(ctx, in, func(o *s3.Options) {
		// A one-shot body cannot be replayed, so no retries; callers retry whole operations.
		o.Retryer = aws.NopRetryer{}
	}, s3.WithAPIOptions(unsignedPayload))
	if err == nil && src.err == nil {
		return nil
	}
	s.removePartial(ctx, key, id)
	if src.err != nil {
		return fmt.Errorf("put %s: %w", key, src.err)
	}
	return fmt.Errorf("put %s: %w", key, mapErr(err))
}

const uploadIDMeta = "iotsupport-upload"

// removePartial deletes what this aborted upload may have left. Some servers (versitygw
// v1.8.0) store the bytes received before the client broke off a request as the
// object: an unsigned payload carries no checksum to verify. Only an object carrying
// this upload's id is deleted; an older or concurrent writer's object stays.
func (s *S3) removePartial(ctx context.Context, key, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil || out.Metadata[uploadIDMeta] != id {
		return
	}
	_, _ = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key, IfMatch: out.ETag})
}

// unsignedPayload streams the body without hashing it first (which needs a seekable
// body or a full buffer). Over plain HTTP that leaves the body unauthenticated; the
// service checks each object's SHA-256 itself, and production endpoints use TLS.
func unsignedPayload(stack *middleware.Stack) error {
	return v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware(stack)
}

// Get fetches the object or only the requested range from the server.
func (s *S3) Get(ctx context.Context, key string, rng *Range) (io.ReadCloser, Info, error) {
	if err := ValidKey(key); err != nil {
		return nil, Info{}, err
	}
	if err := checkRange(rng); err != nil {
		return nil, Info{}, err
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: &key}
	if rng != nil {
		h := fmt.Sprintf("bytes=%d-", rng.Offset)
		if rng.Length > 0 {
			h = fmt.Sprintf("bytes=%d-%d", rng.Offset, rng.Offset+rng.Length-1)
		}
		in.Range = &h
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, Info{}, fmt.Errorf("get %s: %w", key, mapErr(err))
	}
	inf := Info{Key: key, Size: aws.ToInt64(out.ContentLength), ETag: trimETag(out.ETag), ModTime: aws.ToTime(out.LastModified).UTC()}
	cr := aws.ToString(out.ContentRange)
	if rng == nil || cr != "" {
		if total, ok := rangeTotal(cr); ok {
			inf.Size = total
		}
		return out.Body, inf, nil
	}
	// The server ignored Range and sent the whole object: cut the range out ourselves.
	if rng.Offset >= inf.Size {
		out.Body.Close()
		return nil, inf, fmt.Errorf("%w: offset %d of %d bytes", ErrInvalidRange, rng.Offset, inf.Size)
	}
	if _, err := io.CopyN(io.Discard, out.Body, rng.Offset); err != nil {
		out.Body.Close()
		return nil, inf, fmt.Errorf("get %s: %w: %w", key, ErrUnavailable, err)
	}
	n := inf.Size - rng.Offset
	if rng.Length > 0 && rng.Length < n {
		n = rng.Length
	}
	return readCloser{io.LimitReader(out.Body, n), out.Body}, inf, nil
}

// rangeTotal reads the total from "bytes a-b/total".
func rangeTotal(cr string) (int64, bool) {
	i := strings.LastIndex(cr, "/")
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	return n, err == nil
}

func trimETag(e *string) string { return strings.Trim(aws.ToString(e), `"`) }

// Stat is a HEAD request.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", key, mapErr(err))
	}
	return Info{Key: key, Size: aws.ToInt64(out.ContentLength), ETag: trimETag(out.ETag),
		ModTime: aws.ToTime(out.LastModified).UTC()}, nil
}

// Delete removes the object; S3 answers success for missing keys.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil && (isNoSuchBucket(err) || !isNotFound(err)) {
		return fmt.Errorf("delete %s: %w", key, mapErr(err))
	}
	return nil
}

// DeleteMany removes up to 1000 objects per DeleteObjects request (the S3 maximum),
// instead of a request per object. A server that does not implement DeleteObjects (the
// XML API of Google Cloud Storage, for one) gets single deletes from then on.
func (s *S3) DeleteMany(ctx context.Context, keys []string) []error {
	errs := make([]error, len(keys))
	var valid []int
	for i, k := range keys {
		if err := ValidKey(k); err != nil {
			errs[i] = err
		} else {
			valid = append(valid, i)
		}
	}
	for len(valid) > 0 {
		n := min(len(valid), 1000)
		if !s.deleteBatch(ctx, keys, valid[:n], errs) {
			// The request failed as a whole: the store is most likely down.
			for _, i := range valid[n:] {
				errs[i] = notTried(keys[i], errs[valid[0]])
			}
			break
		}
		valid = valid[n:]
	}
	return errs
}

// deleteBatch deletes keys[i] for each i in idx in one request and sets errs[i]. It
// reports false when the request failed as a whole.
func (s *S3) deleteBatch(ctx context.Context, keys []string, idx []int, errs []error) bool {
	batch := make([]string, len(idx))
	for j, i := range idx {
		batch[j] = keys[i]
	}
	if !s.singleDeletes.Load() {
		objs := make([]types.ObjectIdentifier, len(batch))
		for j, k := range batch {
			objs[j] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		// Quiet: the answer lists only the keys that failed.
		out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &s.bucket,
			Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)}})
		if err == nil {
			failed := make(map[string]error, len(out.Errors))
			for _, e := range out.Errors {
				if code := aws.ToString(e.Code); code != "NoSuchKey" {
					k := aws.ToString(e.Key)
					failed[k] = fmt.Errorf("delete %s: %w: %s: %s", k, ErrUnavailable, code, aws.ToString(e.Message))
				}
			}
			for _, i := range idx {
				errs[i] = failed[keys[i]]
			}
			return true
		}
		if !notImplemented(err) {
			err = fmt.Errorf("delete %d objects (%s, ...): %w", len(batch), batch[0], mapErr(err))
			for _, i := range idx {
				errs[i] = err
			}
			return false
		}
		s.singleDeletes.Store(true)
	}
	ok := true
	for j, err := range deleteEach(ctx, s.Delete, batch) {
		errs[idx[j]] = err
		ok = ok && err == nil
	}
	return ok
}

// notImplemented reports a server's answer that it does not support the operation.
func notImplemented(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "NotImplemented" || ae.ErrorCode() == "MethodNotAllowed") {
		return true
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && (re.HTTPStatusCode() == http.StatusNotImplemented || re.HTTPStatusCode() == http.StatusMethodNotAllowed)
}

// List is one ListObjectsV2 page (at most 1000 keys, the S3 maximum). With a full page
// of 1000, more may be true although nothing follows on some servers; Walk copes.
func (s *S3) List(ctx context.Context, prefix, startAfter string, limit int) ([]Info, bool, error) {
	if err := validPrefix(prefix); err != nil {
		return nil, false, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	// Ask for one extra key to learn exactly whether more follow: gofakes3 reports a
	// truncated listing whenever a page is full.
	ask := min(limit+1, 1000)
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, MaxKeys: aws.Int32(int32(ask))}
	if prefix != "" {
		in.Prefix = &prefix
	}
	if startAfter != "" {
		in.StartAfter = &startAfter
	}
	out, err := s.client.ListObjectsV2(ctx, in)
	if err != nil {
		return nil, false, fmt.Errorf("list %s: %w", prefix, mapErr(err))
	}
	items := make([]Info, 0, len(out.Contents))
	for _, o := range out.Contents {
		items = append(items, Info{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), ETag: trimETag(o.ETag),
			ModTime: aws.ToTime(o.LastModified).UTC()})
	}
	if len(items) > limit {
		return items[:limit], true, nil
	}
	if ask > limit {
		return items, false, nil
	}
	return items, aws.ToBool(out.IsTruncated), nil
}

// Check asks for the bucket; a missing bucket is unavailability, not "not found".
func (s *S3) Check(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: bucket %s is missing: %w", ErrUnavailable, s.bucket, err)
		}
		return fmt.Errorf("bucket %s: %w", s.bucket, mapErr(err))
	}
	return nil
}
