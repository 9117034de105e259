//go:build race

package tokencache

// raceEnabled: the race detector allocates on its own, and sync.Pool drops
// what it is given at random under it, so allocation counts are measured
// without it (make test runs those tests again).
const raceEnabled = true
