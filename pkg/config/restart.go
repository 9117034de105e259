package config

// RestartOnly names the fields whose change from old to next only a
// restart puts into service: listening addresses and server limits,
// whether the admin address and the check listeners serve TLS, the admin
// socket, the in-process tier's size, the log format and tracing.
// Everything else a reload applies, certificates, client CAs and allowed
// callers included.
func RestartOnly(old, next *Config) []string {
	var out []string
	check := func(changed bool, path string) {
		if changed {
			out = append(out, path)
		}
	}
	a, b := &old.Server, &next.Server
	check(a.GRPCAddress != b.GRPCAddress, "server.grpcAddress")
	check(*a.HTTPAddress != *b.HTTPAddress, "server.httpAddress")
	check(a.AdminAddress != b.AdminAddress, "server.adminAddress")
	check(a.GRPC.MaxRequestBytes != b.GRPC.MaxRequestBytes, "server.grpc.maxRequestBytes")
	check(a.GRPC.MaxHeaderBytes != b.GRPC.MaxHeaderBytes, "server.grpc.maxHeaderBytes")
	check(a.GRPC.MaxConcurrentStreams != b.GRPC.MaxConcurrentStreams, "server.grpc.maxConcurrentStreams")
	check(a.GRPC.MaxConnectionAge != b.GRPC.MaxConnectionAge, "server.grpc.maxConnectionAge")
	check(a.GRPC.MaxConnectionAgeGrace != b.GRPC.MaxConnectionAgeGrace, "server.grpc.maxConnectionAgeGrace")
	check(a.HTTP.MaxHeaderBytes != b.HTTP.MaxHeaderBytes, "server.http.maxHeaderBytes")
	check((a.Compiled.AdminTLS == nil) != (b.Compiled.AdminTLS == nil), "server.admin.tls")
	check(a.Admin.Socket != b.Admin.Socket, "server.admin.socket")
	check((a.Compiled.Callers == nil) != (b.Compiled.Callers == nil), "server.tls")
	check(a.ShutdownTimeout != b.ShutdownTimeout, "server.shutdownTimeout")
	check(old.Store.MaxEntries != next.Store.MaxEntries, "store.maxEntries")
	check(old.Log.Format != next.Log.Format, "log.format")
	t, u := old.Tracing, next.Tracing
	check(t.Endpoint != u.Endpoint || t.Insecure != u.Insecure || *t.SampleRatio != *u.SampleRatio || t.ServiceName != u.ServiceName, "tracing")
	return out
}
