// Package naming holds the rules for the names that become object-key segments: model
// codes, device keys and firmware versions. Every package that accepts or checks such a
// name (devices, bundle validation, core dump ingest, image validation, the API schema)
// uses these, so a name one accepts is never one another refuses.
package naming

import "regexp"

// ModelCodePattern is the rule for device model codes.
var ModelCodePattern = regexp.MustCompile(`^[a-z0-9_]{1,50}$`)

// DeviceKeyPattern is the rule for device keys (made by the service, checked on input).
var DeviceKeyPattern = regexp.MustCompile(`^[a-z0-9]{8}$`)

// VersionPattern is the character rule for firmware versions, as the API schema states it;
// ValidVersion also refuses "." and "..", which are path elements, never versions.
var VersionPattern = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,32}$`)

// ValidModelCode reports whether s may be a model code.
func ValidModelCode(s string) bool { return ModelCodePattern.MatchString(s) }

// ValidDeviceKey reports whether s may be a device key.
func ValidDeviceKey(s string) bool { return DeviceKeyPattern.MatchString(s) }

// ValidVersion reports whether s may be a firmware version: 1–32 characters of
// [A-Za-z0-9._+-], and not "." or "..".
func ValidVersion(s string) bool { return VersionPattern.MatchString(s) && s != "." && s != ".." }
