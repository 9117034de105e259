// Package deploy holds the example deployments; its test keeps them loadable.
package deploy

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"

	// Types that typed_config fields of the examples name.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// TestEnvoyConfigs loads every Envoy bootstrap in deploy/envoy strictly into
// go-control-plane's Bootstrap message and runs its validation rules, since
// no Envoy binary runs here.
func TestEnvoyConfigs(t *testing.T) {
	files, err := filepath.Glob("envoy/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Envoy configurations: %v", err)
	}
	presents := 0
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			js, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var b bootstrapv3.Bootstrap
			if err := protojson.Unmarshal(js, &b); err != nil {
				t.Fatalf("not a valid Bootstrap: %v", err)
			}
			if err := validate(&b); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			if !strings.Contains(string(data), "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:clientusername)%") {
				t.Error("the access log does not print clientusername")
			}
			checkPathNormalization(t, &b)
			if checkExtauthzTLS(t, &b) {
				presents++
			}
		})
	}
	if presents == 0 {
		t.Error("no Envoy configuration shows Envoy presenting a client certificate to extauthz")
	}
}

// checkExtauthzTLS: when the extauthz cluster speaks TLS, Envoy presents a
// client certificate, verifies extauthz's against a CA and a name, sends
// the SNI and offers h2 for gRPC. It reports whether the cluster does.
func checkExtauthzTLS(t *testing.T, b *bootstrapv3.Bootstrap) bool {
	t.Helper()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != "extauthz" || c.GetTransportSocket() == nil {
			continue
		}
		var tc tlsv3.UpstreamTlsContext
		if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tc); err != nil {
			t.Fatalf("the extauthz cluster's transport socket is not an UpstreamTlsContext: %v", err)
		}
		ctx := tc.GetCommonTlsContext()
		vc := ctx.GetValidationContext()
		switch {
		case len(ctx.GetTlsCertificates()) == 0 && len(ctx.GetTlsCertificateSdsSecretConfigs()) == 0:
			t.Error("Envoy presents no client certificate to extauthz")
		case vc.GetTrustedCa() == nil || len(vc.GetMatchTypedSubjectAltNames()) == 0:
			t.Error("Envoy does not verify extauthz's certificate against a CA and a name")
		case tc.GetSni() == "" || !slices.Contains(ctx.GetAlpnProtocols(), "h2"):
			t.Errorf("sni %q and ALPN %v: want the Service's name and h2", tc.GetSni(), ctx.GetAlpnProtocols())
		}
		return true
	}
	return false
}

// validate runs the protoc-gen-validate rules of m and of every message in
// it, typed_config Any values included, which ValidateAll alone leaves packed.
func validate(m proto.Message) error {
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return err
		}
	}
	if a, ok := m.(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return err
		}
		return validate(inner)
	}
	var errs []error
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				errs = append(errs, validate(v.List().Get(i).Message().Interface()))
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				errs = append(errs, validate(mv.Message().Interface()))
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			errs = append(errs, validate(v.Message().Interface()))
		}
		return true
	})
	return errors.Join(errs...)
}

// checkPathNormalization requires every HTTP connection manager to
// normalize paths and hosts as extauthz does before its routes match them.
func checkPathNormalization(t *testing.T, b *bootstrapv3.Bootstrap) {
	t.Helper()
	n := 0
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				n++
				if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() ||
					hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST || !hcm.GetStripTrailingHostDot() {
					t.Errorf("listener %s: normalize_path %v, merge_slashes %v, path_with_escaped_slashes_action %v, strip_trailing_host_dot %v; want true, true, REJECT_REQUEST, true",
						l.GetName(), hcm.GetNormalizePath().GetValue(), hcm.GetMergeSlashes(), hcm.GetPathWithEscapedSlashesAction(), hcm.GetStripTrailingHostDot())
				}
			}
		}
	}
	if n == 0 {
		t.Error("no HTTP connection manager")
	}
}
