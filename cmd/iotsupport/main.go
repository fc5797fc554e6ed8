// Command iotsupport is the IoT Support service: firmware bundles and core dumps for
// ESP32 fleets. Every sub-command lives in internal/; this file only wires cobra.
package main

import (
	"os"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		os.Exit(exitCode(err))
	}
}
