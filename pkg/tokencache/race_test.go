//go:build race

package tokencache

// raceEnabled: the race detector allocates on its own, so allocation
// counts are measured without it (make test runs those tests again).
const raceEnabled = true
