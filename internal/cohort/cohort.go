// Package cohort decides which devices a staged rollout reaches: a stable hash of the
// device key and the rollout id mapped to [0, 100). A device in the cohort at one
// percentage stays in at every larger one, and each rollout draws its own cohort.
package cohort

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
)

// Position is the device's place in the rollout's cohort order, in [0, 100) with two
// decimals of resolution.
func Position(deviceKey string, rolloutID int64) float64 {
	sum := sha256.Sum256([]byte(deviceKey + "/" + strconv.FormatInt(rolloutID, 10)))
	return float64(binary.BigEndian.Uint64(sum[:8])%10000) / 100
}

// In reports whether the device is in the cohort of a rollout at percent.
func In(deviceKey string, rolloutID int64, percent int) bool {
	return Position(deviceKey, rolloutID) < float64(percent)
}
