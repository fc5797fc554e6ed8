//go:build !iotsupport_testhooks

package main

import (
	"testing"

	"github.com/iotsupport/iotsupport/internal/legacy"
)

// TestNoTestHooksWithoutTheTag: built without the hooks tag, as the production
// binary is, migrate-to-s3 gets no crash points even with the variable set.
func TestNoTestHooksWithoutTheTag(t *testing.T) {
	t.Setenv("IOTSUPPORT_TEST_KILL_AFTER", "0")
	if testHooks.migrateToS3 != nil {
		var o legacy.Options
		testHooks.migrateToS3(&o)
		t.Fatalf("the migrate-to-s3 hook is set (BeforeCommit set: %v)", o.BeforeCommit != nil)
	}
}
