// Package storagecopy copies every object from one blob store to another (e.g. from the
// embedded local directory to S3), verifying size and SHA-256 of each copy. An object
// already present with the same content is left alone, so a run can be repeated or resumed.
package storagecopy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/iotsupport/iotsupport/internal/blob"
)

// Result counts what Copy did.
type Result struct {
	Copied  int      `json:"copied"`
	Present int      `json:"already_present"`
	Bytes   int64    `json:"bytes_copied"`
	Failed  []string `json:"failed"`
}

// Options tune Copy.
type Options struct {
	DryRun bool
	// Progress receives one line per copied object (may be nil).
	Progress io.Writer
}

// ErrVerify: a copied object does not read back as the source.
var ErrVerify = errors.New("copy verification failed")

func digest(ctx context.Context, s blob.Store, key string) (int64, [32]byte, error) {
	rc, _, err := s.Get(ctx, key, nil)
	if err != nil {
		return 0, [32]byte{}, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return 0, [32]byte{}, err
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum, nil
}

// Copy copies every object of src into dst. Per-object failures of the source data are
// listed in Result.Failed; an unavailable store ends the run with an error.
func Copy(ctx context.Context, src, dst blob.Store, o Options) (*Result, error) {
	res := &Result{Failed: []string{}}
	err := blob.Walk(ctx, src, "", func(info blob.Info) error {
		if err := copyOne(ctx, src, dst, info, o, res); err != nil {
			if errors.Is(err, blob.ErrUnavailable) || errors.Is(err, context.Canceled) {
				return err
			}
			res.Failed = append(res.Failed, fmt.Sprintf("%s: %v", info.Key, err))
		}
		return nil
	})
	return res, err
}

func copyOne(ctx context.Context, src, dst blob.Store, info blob.Info, o Options, res *Result) error {
	if dst != nil {
		di, err := dst.Stat(ctx, info.Key)
		switch {
		case err == nil && di.Size == info.Size:
			// Same size: compare contents before declaring it present.
			_, a, err := digest(ctx, src, info.Key)
			if err != nil {
				return err
			}
			_, b, err := digest(ctx, dst, info.Key)
			if err != nil {
				return err
			}
			if a == b {
				res.Present++
				return nil
			}
		case err != nil && !errors.Is(err, blob.ErrNotFound):
			return err
		}
	}
	if o.DryRun {
		res.Copied++
		res.Bytes += info.Size
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "  [DRY RUN] Would copy %s (%d bytes)\n", info.Key, info.Size)
		}
		return nil
	}
	rc, si, err := src.Get(ctx, info.Key, nil)
	if err != nil {
		return err
	}
	h := sha256.New()
	err = dst.Put(ctx, info.Key, io.TeeReader(rc, h), si.Size, "application/octet-stream")
	rc.Close()
	if err != nil {
		return err
	}
	n, got, err := digest(ctx, dst, info.Key)
	if err != nil {
		return err
	}
	if n != si.Size || !bytes.Equal(got[:], h.Sum(nil)) {
		return fmt.Errorf("%w: %s reads back as %d bytes with a different SHA-256", ErrVerify, info.Key, n)
	}
	res.Copied++
	res.Bytes += n
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "  copied %s (%d bytes)\n", info.Key, n)
	}
	return nil
}
