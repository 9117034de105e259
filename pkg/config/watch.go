package config

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce gathers the bursts of events one change makes (Kubernetes swaps
// a mounted Secret with several renames) into one reload.
const debounce = 100 * time.Millisecond

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
	// Unchanged, if set, learns of a reload that found every file as it was.
	Unchanged func()
	// WatchFailed, if set, learns that watching the files failed (the
	// kernel dropped events, say): changes may go unseen until SIGHUP. No
	// configuration was refused.
	WatchFailed func(error)
}

// Watcher reloads a configuration when its file or any secret file it reads
// changes, or when asked (SIGHUP). It watches their directories rather than
// the files, so that editors' renames and Kubernetes' atomic symlink swaps
// of mounted ConfigMaps and Secrets are seen. A change that leaves every
// file's content as it was reloads nothing.
type Watcher struct {
	opts    WatcherOptions
	trigger chan struct{}
	fw      *fsnotify.Watcher
	watched map[string]bool
}

// NewWatcher starts watching the files of o.Current, so that a change made
// once it returns is seen; Run acts on changes.
func NewWatcher(o WatcherOptions) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &Watcher{opts: o, trigger: make(chan struct{}, 1), fw: fw, watched: map[string]bool{}}
	w.watch(o.Current)
	return w, nil
}

// watch adds the directories of c's files.
func (w *Watcher) watch(c *Config) {
	for _, f := range append([]string{w.opts.Path}, c.Files...) {
		dir := filepath.Dir(f)
		if !w.watched[dir] && w.fw.Add(dir) == nil {
			w.watched[dir] = true
		}
	}
}

// Reload asks for a reload, as SIGHUP does. It does not wait.
func (w *Watcher) Reload() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// Run reloads on changes until ctx ends, then stops watching.
func (w *Watcher) Run(ctx context.Context) {
	defer w.fw.Close()
	current := w.opts.Current
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-w.fw.Errors:
			if w.opts.WatchFailed != nil {
				w.opts.WatchFailed(err)
			}
			timer.Reset(debounce) // whatever was missed, look again
		case <-w.fw.Events:
			timer.Reset(debounce)
		case <-w.trigger:
			timer.Reset(0)
		case <-timer.C:
			next, err := Load(w.opts.Path)
			switch {
			case err != nil:
				w.opts.Refused(err)
			case next.Fingerprint == current.Fingerprint:
				if w.opts.Unchanged != nil {
					w.opts.Unchanged()
				}
			default:
				if err := w.opts.Apply(next); err != nil {
					w.opts.Refused(err)
					continue
				}
				current = next
				w.watch(current)
			}
		}
	}
}
