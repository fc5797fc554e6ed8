package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// S3Config addresses a bucket on any S3-compatible service.
type S3Config struct {
	Endpoint        string
	AccessKeyID     string
	SecretAccessKey string
	Bucket          string
	Region          string
	UseSSL          bool
	PathStyle       bool
}

// S3 stores objects in one bucket.
type S3 struct {
	client *s3.Client
	bucket string
}

// NewS3 connects and creates the bucket when it is missing.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
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
	httpClient := &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}}
	opts := s3.Options{
		Region:                     region,
		UsePathStyle:               cfg.PathStyle,
		HTTPClient:                 httpClient,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		// Few, quick retries: an outage should surface as 503 within seconds, not minutes.
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 3
			o.MaxBackoff = 500 * time.Millisecond
		}),
	}
	if cfg.AccessKeyID != "" {
		opts.Credentials = credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")
	}
	if endpoint != "" {
		opts.BaseEndpoint = aws.String(endpoint)
	}
	s := &S3{client: s3.New(opts), bucket: cfg.Bucket}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := s.client.HeadBucket(cctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err == nil {
		return s, nil
	}
	if !isNotFound(err) {
		return nil, fmt.Errorf("check bucket %s at %s: %w", cfg.Bucket, endpoint, mapErr(err))
	}
	_, err = s.client.CreateBucket(cctx, &s3.CreateBucketInput{Bucket: &s.bucket})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return nil, fmt.Errorf("create bucket %s at %s: %w", cfg.Bucket, endpoint, mapErr(err))
	}
	return s, nil
}

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
	return false
}

// mapErr turns SDK errors into our sentinels: missing → ErrNotFound, bad range →
// ErrInvalidRange, anything else (network, 5xx, auth, timeouts) → ErrUnavailable.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if isNotFound(err) {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange" {
		return fmt.Errorf("%w: %v", ErrInvalidRange, err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// Put streams r with a known length (no buffering); a short reader fails the request,
// so the object is never created partially.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, Body: &exactReader{r: r, left: size}, ContentLength: aws.Int64(size), ContentType: &contentType}
	_, err := s.client.PutObject(ctx, in, func(o *s3.Options) {
		// A non-seekable body cannot be replayed, so no retries here; callers retry whole operations.
		o.Retryer = aws.NopRetryer{}
	}, s3.WithAPIOptions(unsignedPayload))
	if err != nil {
		return fmt.Errorf("put %s: %w", key, mapErr(err))
	}
	return nil
}

// exactReader fails when the source ends before the declared length, so the HTTP
// request is aborted instead of completing with a short body.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF {
		if e.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		return n, io.EOF
	}
	return n, err
}

// unsignedPayload streams the body without hashing it first (which would need a
// seekable body or a full buffer); integrity is checked by the service's own SHA-256.
func unsignedPayload(stack *middleware.Stack) error {
	return v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware(stack)
}

// Get fetches the object or only the requested range from the server.
func (s *S3) Get(ctx context.Context, key string, rng *Range) (io.ReadCloser, Info, error) {
	if err := ValidKey(key); err != nil {
		return nil, Info{}, err
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: &key}
	if rng != nil {
		if rng.Offset < 0 {
			return nil, Info{}, fmt.Errorf("%w: negative offset", ErrInvalidRange)
		}
		h := fmt.Sprintf("bytes=%d-", rng.Offset)
		if rng.Length >= 0 {
			if rng.Length == 0 {
				return nil, Info{}, fmt.Errorf("%w: empty range", ErrInvalidRange)
			}
			h = fmt.Sprintf("bytes=%d-%d", rng.Offset, rng.Offset+rng.Length-1)
		}
		in.Range = &h
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, Info{}, fmt.Errorf("get %s: %w", key, mapErr(err))
	}
	inf := Info{Key: key, ETag: strings.Trim(aws.ToString(out.ETag), `"`), ModTime: aws.ToTime(out.LastModified).UTC()}
	inf.Size = aws.ToInt64(out.ContentLength)
	if cr := aws.ToString(out.ContentRange); cr != "" {
		// "bytes a-b/total"
		if i := strings.LastIndex(cr, "/"); i >= 0 {
			var total int64
			if _, err := fmt.Sscan(cr[i+1:], &total); err == nil {
				inf.Size = total
			}
		}
	}
	return out.Body, inf, nil
}

// Stat is a HEAD request.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", key, mapErr(err))
	}
	return Info{Key: key, Size: aws.ToInt64(out.ContentLength), ETag: strings.Trim(aws.ToString(out.ETag), `"`),
		ModTime: aws.ToTime(out.LastModified).UTC()}, nil
}

// Delete removes the object; S3 answers success for missing keys.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", key, mapErr(err))
	}
	return nil
}

// List is one ListObjectsV2 page.
func (s *S3) List(ctx context.Context, prefix, startAfter string, limit int) ([]Info, bool, error) {
	if err := validPrefix(prefix); err != nil {
		return nil, false, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, MaxKeys: aws.Int32(int32(limit))}
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
		items = append(items, Info{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), ETag: strings.Trim(aws.ToString(o.ETag), `"`),
			ModTime: aws.ToTime(o.LastModified).UTC()})
	}
	return items, aws.ToBool(out.IsTruncated), nil
}

// Check asks for the bucket.
func (s *S3) Check(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", s.bucket, mapErr(err))
	}
	return nil
}
