package naming

import (
	"strings"
	"testing"
)

func TestRules(t *testing.T) {
	for _, c := range []struct {
		name string
		f    func(string) bool
		ok   []string
		bad  []string
	}{
		{"model code", ValidModelCode, []string{"a", "esp32_sensor", strings.Repeat("a", 50)},
			[]string{"", "A", "a-b", "a/b", "..", strings.Repeat("a", 51), "a b"}},
		{"device key", ValidDeviceKey, []string{"abcd1234", "00000000"},
			[]string{"", "abcd123", "abcd12345", "ABCD1234", "abcd-123", "../../x"}},
		{"version", ValidVersion, []string{"1.0.0", "v2.3.4-rc1+build.5", "a", "...", strings.Repeat("9", 32)},
			[]string{"", ".", "..", "1/2", "1 2", strings.Repeat("9", 33), "ü"}},
	} {
		for _, s := range c.ok {
			if !c.f(s) {
				t.Errorf("%s %q refused", c.name, s)
			}
		}
		for _, s := range c.bad {
			if c.f(s) {
				t.Errorf("%s %q accepted", c.name, s)
			}
		}
	}
}

// The cases the image validator's own rule had, kept when the rule moved here.
func TestValidVersionImageCases(t *testing.T) {
	for _, v := range []string{"1", "v1.0-56-g30082bf", "2.0.1+build_7", strings.Repeat("x", 32), "..a"} {
		if !ValidVersion(v) {
			t.Errorf("ValidVersion(%q) = false", v)
		}
	}
	for _, v := range []string{"", strings.Repeat("x", 33), "1/2", "..", ".", "a b", "v1\x00", "é", "a\\b"} {
		if ValidVersion(v) {
			t.Errorf("ValidVersion(%q) = true", v)
		}
	}
}
