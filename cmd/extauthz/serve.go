package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/extauthz/extauthz/internal/httpdeadline"
	"github.com/extauthz/extauthz/pkg/admin"
	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/builder"
	"github.com/extauthz/extauthz/pkg/callers"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/grpclimit"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/tokencache"
)

// httpLimits bound HTTP mode's slow clients: 5 s to send a request's
// headers, 10 s its body, a check answered and written within 35 s (a check
// waits on the token endpoint for up to authz.HTTPCheckTimeout), and 2 min
// idle between requests; on plain HTTP/1, at most as many connections
// reading headers at once as gRPC has full header lists open.
var httpLimits = httpdeadline.Limits{
	Header:  5 * time.Second,
	Body:    10 * time.Second,
	Request: authz.HTTPCheckTimeout + 5*time.Second,
	Idle:    2 * time.Minute,
	Reading: config.OpenHeaderLists,
}

// httpServer is net/http's server or fasthttp's (fastServer).
type httpServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// fastServer serves HTTP mode over plain HTTP/1 with fasthttp
// (httpdeadline.Watch.FastServer).
type fastServer struct{ *fasthttp.Server }

// fastLogger logs what fasthttp says: a connection that ended in error (a
// malformed request, answered 400 or 431, or a client gone) at debug, as
// net/http does not log those at all and a caller could flood the log with
// them, and with what the error quotes of the request removed (a malformed
// header line may be a credential); the rest (accepting connections
// failing) as warnings.
type fastLogger struct{ log *zap.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	if strings.HasPrefix(format, "error when serving connection") && len(args) == 3 {
		if l.log.Core().Enabled(zap.DebugLevel) {
			l.log.Debug("HTTP mode: a connection ended in error", zap.String("remote_address", fmt.Sprint(args[1])),
				zap.String("error", unquoted(fmt.Sprint(args[2]))))
		}
		return
	}
	l.log.Warn(fmt.Sprintf(format, args...))
}

// unquoted replaces what s quotes ("…", as fasthttp quotes request bytes)
// with "…".
func unquoted(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		rest := s[i+1:]
		j := 0
		for j < len(rest) && rest[j] != '"' {
			if rest[j] == '\\' {
				j++
			}
			j++
		}
		b.WriteString(`"…"`)
		if j >= len(rest) {
			return b.String()
		}
		s = rest[j+1:]
	}
}

func (f fastServer) Shutdown(ctx context.Context) error { return f.ShutdownWithContext(ctx) }

// Close stops serving at once: the listener closed, idle connections too.
func (f fastServer) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = f.ShutdownWithContext(ctx)
	return nil
}

// configFlag adds --config, defaulting to $EXTAUTHZ_CONFIG.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", os.Getenv("EXTAUTHZ_CONFIG"), "the configuration `FILE` (default $EXTAUTHZ_CONFIG)")
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usagef("no configuration: give --config FILE or set EXTAUTHZ_CONFIG")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// runValidate checks a configuration and prints every problem in it.
func runValidate(_ context.Context, args []string, std stdio) error {
	fs := newFlagSet("validate", "validate --config FILE", std)
	path := configFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usagef("validate: give --config FILE or set EXTAUTHZ_CONFIG")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		problems := []error{err}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			problems = joined.Unwrap()
		}
		for _, p := range problems {
			fmt.Fprintf(std.err, "%s: %v\n", *path, p)
		}
		return fmt.Errorf("%s: %d problem(s)", *path, len(problems))
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(std.err, "%s: warning: %s\n", *path, w)
	}
	fmt.Fprintf(std.out, "%s: valid, %d policies\n", *path, len(cfg.Policies))
	return nil
}

// runServe serves Check over gRPC, HTTP mode and the admin endpoints until ctx ends.
func runServe(ctx context.Context, args []string, std stdio) error {
	fs := newFlagSet("serve", "serve --config FILE", std)
	path := configFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	// SIGHUP reloads; registered first, so that it never kills the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	level, err := zap.ParseAtomicLevel(cfg.Log.Level)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log.Format, level, std)
	defer func() { _ = log.Sync() }()

	for _, w := range cfg.Warnings {
		log.Warn("configuration", zap.String("warning", w))
	}
	redis.SetLogger(tokencache.RedisLogger(log))
	registry := prometheus.NewRegistry()
	m := metrics.New(registry)
	cache := tokencache.New(tokencache.Options{MaxEntries: cfg.Store.MaxEntries, Logger: log, Metrics: m})
	defer cache.Close()
	tracer, stopTracing, err := newTracer(ctx, cfg.Tracing)
	if err != nil {
		return err
	}
	defer stopTracing()
	o := authz.Options{Tokens: cache, Logger: log, Metrics: m}
	if cfg.Tracing.Endpoint != "" {
		o.Tracer = tracer // without one, Checks skip spans and trace headers altogether
	}
	srv, err := authz.New(o)
	if err != nil {
		return err
	}
	parts := builder.New(builder.Deps{Serve: srv.Update, Cache: cache, Logger: log, Metrics: m, Tracer: tracer})
	defer parts.Close()
	if err := parts.Apply(cfg); err != nil {
		return err
	}

	var ready atomic.Bool
	adminSrv := admin.NewServer(admin.Options{Backend: parts, Registry: registry, Ready: ready.Load, Logger: log, Auth: adminAuth(cfg)})
	if a := adminAuth(cfg); a.Open() {
		where := "set server.admin.socket to call it from inside the pod (grpcurl -plaintext -unix <socket>)"
		if cfg.Server.Admin.Socket != "" {
			where = "it answers on server.admin.socket alone: grpcurl -plaintext -unix " + cfg.Server.Admin.Socket + " list"
		}
		log.Warn("the admin API and /debug/pprof/ are not served over TCP: set server.admin.token or server.admin.tls.clientCA to serve them there; " + where)
	}
	// Who may call the check listeners, when they serve TLS; a reload
	// swaps certificates, CAs and allowed callers.
	var guard *callers.Guard
	if p := cfg.Server.Compiled.Callers; p != nil {
		guard = callers.NewGuard(callers.GuardOptions{Policy: p, Connections: m.CallerConnections, Logger: log})
	}

	inForce := cfg // the configuration last applied; the watcher's goroutine alone uses it
	watcher, err := config.NewWatcher(config.WatcherOptions{
		Path:    *path,
		Current: cfg,
		Apply: func(next *config.Config) error {
			if err := parts.Apply(next); err != nil {
				return err
			}
			if l, err := zapcore.ParseLevel(next.Log.Level); err == nil {
				level.SetLevel(l)
			}
			adminSrv.Update(adminAuth(next))
			if p := next.Server.Compiled.Callers; p != nil && guard != nil {
				guard.Update(p) // TLS on or off is for a restart (RestartOnly)
			}
			if fields := config.RestartOnly(inForce, next); len(fields) > 0 {
				log.Warn("configuration changes that take effect only after a restart", zap.Strings("fields", fields))
			}
			for _, w := range next.Warnings {
				log.Warn("configuration", zap.String("warning", w))
			}
			inForce = next
			m.ConfigReloads.WithLabelValues("applied").Inc()
			log.Info("configuration reloaded", zap.Int("policies", len(next.Policies)))
			return nil
		},
		Refused: func(err error) {
			m.ConfigReloads.WithLabelValues("refused").Inc()
			log.Error("configuration refused; the previous one keeps serving", zap.Error(err))
		},
		Unchanged: func() {
			m.ConfigReloads.WithLabelValues("unchanged").Inc()
			log.Info("configuration unchanged")
		},
		WatchFailed: func(err error) {
			log.Warn("watching the configuration's files failed; looking at them again (SIGHUP reloads too)", zap.Error(err))
		},
	})
	if err != nil {
		return fmt.Errorf("watching the configuration: %w", err)
	}
	grpcLis, err := net.Listen("tcp", cfg.Server.GRPCAddress)
	if err != nil {
		return fmt.Errorf("server.grpcAddress: %w", err)
	}
	adminLis, err := net.Listen("tcp", cfg.Server.AdminAddress)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("server.adminAddress: %w", err)
	}
	var httpLis net.Listener
	if addr := *cfg.Server.HTTPAddress; addr != "" {
		if httpLis, err = net.Listen("tcp", addr); err != nil {
			grpcLis.Close()
			adminLis.Close()
			return fmt.Errorf("server.httpAddress: %w", err)
		}
	}
	var socketLis *net.UnixListener
	if path := cfg.Server.Admin.Socket; path != "" {
		if socketLis, err = admin.ListenSocket(path); err != nil {
			grpcLis.Close()
			adminLis.Close()
			if httpLis != nil {
				httpLis.Close()
			}
			return fmt.Errorf("server.admin.socket: %w", err)
		}
	}
	// The check listeners hand out only connections whose TLS handshake,
	// client certificate and identity passed; the guard's interceptors and
	// handler refuse the requests of those a reload no longer trusts.
	var grpcOpts []grpc.ServerOption
	var httpHandler http.Handler = srv
	if guard != nil {
		grpcLis = guard.Listen(grpcLis, callers.ListenerOptions{Name: "grpc", NextProtos: []string{"h2"}})
		if httpLis != nil {
			httpLis = guard.Listen(httpLis, callers.ListenerOptions{Name: "http", NextProtos: []string{"h2", "http/1.1"}})
		}
		grpcOpts = append(grpcOpts, grpc.Creds(guard.Credentials()),
			grpc.ChainUnaryInterceptor(guard.UnaryInterceptor), grpc.ChainStreamInterceptor(guard.StreamInterceptor))
		httpHandler = guard.Handler(srv)
	}

	gs := grpc.NewServer(append(grpcOpts,
		grpc.ChainUnaryInterceptor(srv.UnaryInterceptor),
		grpc.ChainStreamInterceptor(srv.StreamInterceptor),
		grpc.MaxRecvMsgSize(cfg.Server.GRPC.MaxRequestBytes),
		grpc.MaxConcurrentStreams(uint32(cfg.Server.GRPC.MaxConcurrentStreams)),
		// A stream's header list is bounded (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE,
		// enforced while decoding), and so are those of all the streams open
		// at once, however many connections hold them.
		grpc.MaxHeaderListSize(uint32(cfg.Server.GRPC.MaxHeaderBytes)),
		grpclimit.NewBudget(config.OpenHeaderLists*int64(cfg.Server.GRPC.MaxHeaderBytes), m.GRPCStreamsRefused).ServerOption(),
		// Envoy keeps its connections for long: pings no more often than
		// every 5 s are welcome, and a peer that stops answering ours is dropped.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// A connection is closed after MaxConnectionAge (the calls under way
		// get the grace): Envoy reconnects, and spreads its connections
		// over replicas that started since.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second,
			MaxConnectionAge: time.Duration(cfg.Server.GRPC.MaxConnectionAge), MaxConnectionAgeGrace: time.Duration(cfg.Server.GRPC.MaxConnectionAgeGrace)}),
		// Cache hits are kept encoded and written as they are.
		grpc.ForceServerCodecV2(authz.Codec()),
	)...)
	srv.Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	// httpSrv serves HTTP mode; with no listener it is never started and
	// its Shutdown returns at once.
	var httpSrv httpServer
	if guard != nil || httpLis == nil {
		// TLS, and HTTP/2 with it: net/http, and its own per-request
		// deadlines for slow clients, phase by phase.
		hs := &http.Server{
			Handler:           httpHandler,
			MaxHeaderBytes:    cfg.Server.HTTP.MaxHeaderBytes,
			ErrorLog:          zap.NewStdLog(log.Named("http")),
			ReadHeaderTimeout: httpLimits.Header,
			ReadTimeout:       httpLimits.Body,
			WriteTimeout:      httpLimits.Request,
			IdleTimeout:       httpLimits.Idle,
		}
		if guard != nil {
			hs.ConnContext = guard.ConnContext
		}
		httpSrv = hs
	} else {
		// Plain HTTP/1: fasthttp, which spends about half the CPU time
		// net/http does on a request, and the same bounds on slow clients
		// kept by one sweeper, not by timers armed for every request.
		watch := httpdeadline.New(httpLimits, m.HTTPConnectionsRefused.Inc)
		defer watch.Close()
		httpLis = watch.Listen(httpLis)
		httpSrv = fastServer{watch.FastServer(srv.ServeFastHTTP, cfg.Server.HTTP.MaxHeaderBytes, fastLogger{log.Named("http")})}
	}
	httpAddr := ""

	errc := make(chan error, 4)
	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- adminSrv.Serve(adminLis) }()
	if socketLis != nil {
		go func() { errc <- adminSrv.ServeSocket(socketLis) }()
		defer os.Remove(cfg.Server.Admin.Socket)
	}
	if httpLis != nil {
		httpAddr = httpLis.Addr().String()
		go func() { errc <- httpSrv.Serve(httpLis) }()
	}
	ready.Store(true)
	log.Info("serving",
		zap.String("grpc_address", grpcLis.Addr().String()),
		zap.String("http_address", httpAddr),
		zap.String("admin_address", adminLis.Addr().String()),
		zap.String("admin_socket", cfg.Server.Admin.Socket),
		zap.Bool("tls", guard != nil),
		zap.Bool("callers_authenticated", cfg.Server.Compiled.CallersAuthenticated()),
		zap.Int("policies", len(cfg.Policies)),
		zap.String("version", version))

	wctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	go watcher.Run(wctx)

wait:
	for {
		select {
		case <-hup:
			log.Info("SIGHUP: reloading the configuration")
			watcher.Reload()
			continue
		case <-ctx.Done():
		case err := <-errc:
			log.Error("server stopped", zap.Error(err))
			gs.Stop()
			_ = adminSrv.Close()
			_ = httpSrv.Close()
			return err
		}
		break wait
	}

	// Drain: report NOT_SERVING so that health checks route new traffic
	// elsewhere, let in-flight Checks finish, then stop; one deadline for
	// every listener, fixed at start like the listeners themselves.
	timeout := time.Duration(cfg.Server.ShutdownTimeout)
	log.Info("shutting down", zap.Duration("timeout", timeout))
	ready.Store(false)
	hs.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var drained sync.WaitGroup
	drained.Go(func() {
		stopped := make(chan struct{})
		go func() {
			gs.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-sctx.Done():
			log.Warn("in-flight gRPC checks did not finish in time")
			gs.Stop()
		}
	})
	drained.Go(func() {
		if err := httpSrv.Shutdown(sctx); err != nil {
			log.Warn("in-flight HTTP checks did not finish in time", zap.Error(err))
			_ = httpSrv.Close()
		}
	})
	drained.Wait()
	// The admin address answers probes and scrapes until the checks are done.
	if err := adminSrv.Shutdown(sctx); err != nil {
		_ = adminSrv.Close()
	}
	log.Info("stopped")
	return nil
}

// newTracer returns the tracer of the configuration (a no-op one when
// tracing is off) and a function that flushes and stops it.
func newTracer(ctx context.Context, c config.Tracing) (trace.Tracer, func(), error) {
	if c.Endpoint == "" {
		return noop.NewTracerProvider().Tracer(""), func() {}, nil
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(c.Endpoint)}
	if c.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exporter, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*c.SampleRatio))),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", c.ServiceName), attribute.String("service.version", version))),
	)
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx)
	}
	return tp.Tracer("github.com/extauthz/extauthz"), stop, nil
}

// adminAuth is who may call the admin API under cfg.
func adminAuth(cfg *config.Config) admin.Auth {
	c := cfg.Server.Compiled
	return admin.Auth{Token: c.AdminToken, ClientCA: c.AdminClientCA, TLS: c.AdminTLS}
}

// newLogger writes to standard error at level, which a reload may change.
func newLogger(format string, level zap.AtomicLevel, std stdio) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder
	if format == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	ws, ok := std.err.(zapcore.WriteSyncer)
	if !ok {
		ws = zapcore.AddSync(std.err)
	}
	core := zapcore.NewCore(encoder, zapcore.Lock(ws), level)
	return zap.New(core)
}
