package blob

// Recorded is an object as a database row records it: what a consistency check (fsck)
// compares with the store's listing. The packages that own the rows produce these, so
// the checker never builds their keys or reads their tables.
type Recorded struct {
	// Key is the object the row expects.
	Key string
	// Size is the recorded size; -1 when the row records none (nothing to compare).
	Size int64
	// SHA256 is the recorded hex digest; "" when the row records none.
	SHA256 string
	// Folder: the row also owns every other object in Key's folder (a firmware version
	// adopted from the older service has no list of its artifacts).
	Folder bool
	// Settled: the row already records that the object is missing; it is neither
	// compared nor reported again.
	Settled bool
	// Pending: the object need not exist yet (a file of the older service not yet moved
	// into the store). The row owns the key, but nothing is compared or reported.
	Pending bool
	// Missing describes the row when its object is gone (a finding's detail).
	Missing string
}
