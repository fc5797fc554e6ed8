package coredumps

// KindMissingObject is the parse_error kind of a core dump whose stored object is gone,
// recorded by the decoder and by fsck's repair alike.
const KindMissingObject = "missing_object"
