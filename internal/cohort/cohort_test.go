package cohort

import (
	"fmt"
	"testing"
)

// TestCohortGrowsWithoutLosingDevices: as the percentage grows no device leaves, the
// share is close to the percentage, and two rollouts draw different cohorts.
func TestCohortGrowsWithoutLosingDevices(t *testing.T) {
	keys := make([]string, 5000)
	for i := range keys {
		keys[i] = fmt.Sprintf("d%07d", i)
	}
	prev := map[string]bool{}
	for _, p := range []int{0, 1, 5, 25, 50, 99, 100} {
		n := 0
		for _, k := range keys {
			in := In(k, 7, p)
			if prev[k] && !in {
				t.Fatalf("device %s left the cohort at %d %%", k, p)
			}
			if in {
				prev[k] = true
				n++
			}
		}
		share := 100 * float64(n) / float64(len(keys))
		if share < float64(p)-2 || share > float64(p)+2 {
			t.Errorf("%d %%: %.1f %% of devices in the cohort", p, share)
		}
	}
	same := 0
	for _, k := range keys {
		if In(k, 7, 25) == In(k, 8, 25) {
			same++
		}
	}
	if same == len(keys) {
		t.Error("rollouts 7 and 8 drew the same cohort")
	}
}
