//go:build iotsupport_testhooks

package main

import (
	"os"
	"strconv"

	"github.com/iotsupport/iotsupport/internal/legacy"
)

func init() {
	// IOTSUPPORT_TEST_KILL_AFTER=N makes migrate-to-s3 exit with 137, as SIGKILL would,
	// after N committed files, at the worst moment: the next core dump's object is
	// written but its row change is not committed.
	testHooks.migrateToS3 = func(o *legacy.Options) {
		n, err := strconv.Atoi(os.Getenv("IOTSUPPORT_TEST_KILL_AFTER"))
		if err != nil || n < 0 {
			return
		}
		o.BeforeCommit = func(done int) {
			if done >= n {
				os.Exit(137)
			}
		}
		o.AfterCommit = func(done int) {
			if done > n {
				os.Exit(137)
			}
		}
	}
}
