package config

import (
	"context"
	"crypto/sha256"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// The watcher's defaults.
const (
	// DefaultQuiet is how long the files that matter must be left alone
	// before a change is looked at, so that the burst one change makes (an
	// editor's writes, Kubernetes' renames when it swaps a mounted Secret)
	// is one reload.
	DefaultQuiet = 150 * time.Millisecond
	// DefaultMaxDelay bounds that wait: a file rewritten without pause is
	// still looked at this long after its first change.
	DefaultMaxDelay = time.Second
	// loadAttempts bounds how often one look loads the configuration again
	// because it came to read files that were not read before it.
	loadAttempts = 3
)

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	// Path is the configuration file.
	Path string
	// Current is the configuration in service.
	Current *Config
	// Apply puts a new, valid configuration into service. An error refuses it.
	Apply func(*Config) error
	// Refused learns of a change that did not load or was not applied; the
	// configuration in service stays.
	Refused func(error)
	// Unchanged, if set, learns of a reload that loaded the configuration
	// in service again: asked for (SIGHUP), or after a change of content
	// that changes nothing (a rotated assertion of the same identity).
	Unchanged func()
	// WatchFailed, if set, learns that watching the files failed (the
	// kernel dropped events, say): changes may go unseen until SIGHUP. No
	// configuration was refused.
	WatchFailed func(error)
	// Quiet is how long the files must be left alone before a change is
	// looked at; zero means DefaultQuiet.
	Quiet time.Duration
	// MaxDelay bounds how long a change waits for quiet; zero means
	// DefaultMaxDelay.
	MaxDelay time.Duration
}

// Watcher reloads a configuration when the content of a file it depends on
// changes, or when asked (SIGHUP). The files are the configuration file,
// every file it read (secret files, policy files, assertion files: see
// Config.Files) and the files its policyFiles globs match, which a new file
// joins.
//
// It watches directories rather than files, so that editors' renames and
// Kubernetes' atomic swaps of mounted ConfigMaps and Secrets (the ..data
// symlink) are seen, but it decides by content: an event about another file
// of those directories, such as a log written beside the configuration,
// is ignored, and a file whose content is as it was when the configuration
// in service was loaded reloads nothing. Events are gathered until the
// files have been quiet for Quiet, or for at most MaxDelay, so that a burst
// is one reload.
type Watcher struct {
	opts    WatcherOptions
	trigger chan struct{}
	fw      *fsnotify.Watcher

	// The fields below belong to Run's goroutine once it starts.
	current *Config         // in service: loading its fingerprint again changes nothing
	loaded  *Config         // the last one loaded, applied or not: it names the files that matter
	globs   []string        // loaded's policyFiles, placed as Load places them
	seen    contents        // the files that matter, as they were before loaded was read
	dirs    map[string]bool // the directories that hold them
	stale   bool            // the files changed between the loading of Current and the watching
}

// contents holds what each file that matters held.
type contents map[string]content

// content is a SHA-256 of a file's content, or why it could not be read.
type content struct {
	sum [sha256.Size]byte
	err string
}

// unread stands for a file that was not read before the configuration was
// loaded: it differs from any content, so that the file is loaded again.
var unread = content{err: "not read before the configuration was loaded"}

// NewWatcher starts watching the files of o.Current, so that a change made
// once it returns is seen; Run acts on changes. It loads the configuration
// once more, after watching, so that a change made between the loading of
// o.Current and the watching is not missed either: Run then reloads at once.
func NewWatcher(o WatcherOptions) (*Watcher, error) {
	if o.Quiet <= 0 {
		o.Quiet = DefaultQuiet
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &Watcher{opts: o, trigger: make(chan struct{}, 1), fw: fw, current: o.Current}
	w.setLoaded(o.Current)
	files := w.files(o.Current)
	w.watch(files)
	next, seen, settled, err := w.load(w.snapshot(files))
	w.seen = seen
	if err == nil && next.Fingerprint == o.Current.Fingerprint {
		w.setLoaded(next)
		w.stale = !settled
	} else {
		w.stale = true
	}
	return w, nil
}

// Reload asks for a reload, as SIGHUP does, whatever the files hold. It
// does not wait.
func (w *Watcher) Reload() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// Run reloads on changes until ctx ends, then stops watching.
func (w *Watcher) Run(ctx context.Context) {
	defer w.fw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var first time.Time // of the events not looked at yet; zero when there are none
	wait := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		timer.Reset(min(w.opts.Quiet, first.Add(w.opts.MaxDelay).Sub(now)))
	}
	force := w.stale
	if force {
		timer.Reset(0)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.fw.Errors:
			if w.opts.WatchFailed != nil {
				w.opts.WatchFailed(err)
			}
			wait() // whatever was missed, look at the files again
		case ev := <-w.fw.Events:
			if w.matters(ev.Name) {
				wait()
			}
		case <-w.trigger:
			force = true
			timer.Reset(0)
		case <-timer.C:
			first = time.Time{}
			again := w.look(force)
			force = false
			if again {
				wait()
			}
		}
	}
}

// matters reports whether an event about name may be about a file that
// matters. It must not read any file: it runs for every event.
func (w *Watcher) matters(name string) bool {
	name = filepath.Clean(name)
	if _, ok := w.seen[name]; ok || w.dirs[name] {
		return true
	}
	if filepath.Base(name) == "..data" {
		return true // Kubernetes swapped the content of a mounted volume
	}
	for _, g := range w.globs {
		if ok, _ := filepath.Match(g, name); ok {
			return true
		}
	}
	return false
}

// look reloads if a file that matters changed or force is set, and reports
// whether it must look again because the files kept changing while it
// loaded.
func (w *Watcher) look(force bool) (again bool) {
	now := w.snapshot(w.files(w.loaded))
	if !force && maps.Equal(now, w.seen) {
		return false
	}
	next, seen, settled, err := w.load(now)
	w.seen = seen
	switch {
	case err != nil:
		w.opts.Refused(err)
	case next.Fingerprint == w.current.Fingerprint:
		w.setLoaded(next)
		if w.opts.Unchanged != nil {
			w.opts.Unchanged()
		}
	default:
		w.setLoaded(next)
		if err := w.opts.Apply(next); err != nil {
			w.opts.Refused(err)
			break
		}
		w.current = next
	}
	w.watch(slices.Collect(maps.Keys(w.seen)))
	return !settled
}

// load loads the configuration, having read every file it depends on
// first, and returns those contents. What is remembered is so never newer
// than what was loaded: a change that races the load is a change at the
// next look. A configuration that reads files not read before is loaded
// again once they have been.
func (w *Watcher) load(seen contents) (next *Config, _ contents, settled bool, err error) {
	for range loadAttempts {
		next, err = Load(w.opts.Path)
		if err != nil {
			c, settled := over(seen, w.files(w.loaded))
			return nil, c, settled, err
		}
		files := w.files(next)
		if c, settled := over(seen, files); settled {
			return next, c, true, nil
		}
		seen = w.snapshot(files)
	}
	c, settled := over(seen, w.files(next))
	return next, c, settled, nil
}

// over returns the contents of files in seen, with unread for those it
// lacks, and whether it lacked none.
func over(seen contents, files []string) (contents, bool) {
	out := make(contents, len(files))
	settled := true
	for _, f := range files {
		c, ok := seen[f]
		if !ok {
			c, settled = unread, false
		}
		out[f] = c
	}
	return out, settled
}

func (w *Watcher) setLoaded(c *Config) {
	w.loaded = c
	w.globs = w.globs[:0]
	dir := filepath.Dir(w.opts.Path)
	for _, g := range c.PolicyFiles {
		if !filepath.IsAbs(g) {
			g = filepath.Join(dir, g)
		}
		w.globs = append(w.globs, filepath.Clean(g))
	}
}

// files returns the files c depends on: the configuration file, those c
// read, and those its policyFiles globs match now.
func (w *Watcher) files(c *Config) []string {
	files := []string{filepath.Clean(w.opts.Path)}
	for _, f := range c.Files {
		files = append(files, filepath.Clean(f))
	}
	dir := filepath.Dir(w.opts.Path)
	for _, g := range c.PolicyFiles {
		if !filepath.IsAbs(g) {
			g = filepath.Join(dir, g)
		}
		matches, _ := filepath.Glob(g) // a bad glob did not load
		files = append(files, matches...)
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// snapshot reads files.
func (w *Watcher) snapshot(files []string) contents {
	c := make(contents, len(files))
	for _, f := range files {
		c[f] = read(f)
	}
	return c
}

// read hashes a file, reading no more of it than Load would.
func read(path string) content {
	f, err := os.Open(path)
	if err != nil {
		return content{err: err.Error()}
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, MaxFileBytes+1)); err != nil {
		return content{err: err.Error()}
	}
	var c content
	h.Sum(c.sum[:0])
	return c
}

// watch watches the directories that hold files and those the policyFiles
// globs look in, and stops watching any other. A directory that cannot be
// watched yet (it does not exist) is tried again at the next look.
func (w *Watcher) watch(files []string) {
	want := map[string]bool{}
	for _, f := range files {
		want[filepath.Dir(f)] = true
	}
	for _, g := range w.globs {
		dirs, _ := filepath.Glob(filepath.Dir(g))
		for _, d := range dirs {
			want[d] = true
		}
	}
	have := w.fw.WatchList()
	for _, d := range have {
		if !want[d] {
			_ = w.fw.Remove(d)
		}
	}
	for d := range want {
		if !slices.Contains(have, d) {
			_ = w.fw.Add(d)
		}
	}
	w.dirs = want
}
