//go:build race

package claims

// raceEnabled: under the race detector sync.Pool drops what it is given at
// random, so allocation counts are measured without it (make test runs
// those tests again).
const raceEnabled = true
