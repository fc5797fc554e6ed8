package main

import "github.com/iotsupport/iotsupport/internal/legacy"

// testHooks are the crash points the process tests use. Only test builds set them
// (testhooks_on.go, build tag iotsupport_testhooks, which internal/proctest builds
// with), so no environment variable can make a production binary kill itself.
var testHooks struct {
	// migrateToS3 may add crash points to migrate-to-s3's options.
	migrateToS3 func(o *legacy.Options)
}
