package firmware

import (
	"context"
	"errors"
	"io"

	"github.com/iotsupport/iotsupport/internal/blob"
	"github.com/iotsupport/iotsupport/internal/blobcache"
)

// openCached serves an artifact with a recorded size and SHA-256 from the local cache
// (ok=false: read it from the store as usual). A cache problem never fails a download
// the store could serve: it is logged and the caller streams from the store.
func (s *Service) openCached(ctx context.Context, a *Artifact, rng *blob.Range) (rc io.ReadCloser, ok bool) {
	if s.Cache == nil || a.SHA256 == "" || a.Size <= 0 {
		return nil, false
	}
	key := Key(a.Code, a.Version, a.Name)
	f, err := s.Cache.Open(ctx, key, a.Size, a.SHA256)
	if err != nil {
		// Too large is by design, and a missing object is the store's answer too.
		if !errors.Is(err, blobcache.ErrTooLarge) && !errors.Is(err, blob.ErrNotFound) && ctx.Err() == nil {
			s.log.Warn("firmware cache failed, streaming from storage", "key", key, "error", err)
		}
		return nil, false
	}
	rc, err = blob.FileRange(f, a.Size, rng)
	if err != nil {
		f.Close()
		// An invalid range is answered by the store exactly as without the cache.
		if !errors.Is(err, blob.ErrInvalidRange) {
			s.log.Warn("firmware cache failed, streaming from storage", "key", key, "error", err)
		}
		return nil, false
	}
	return rc, true
}
