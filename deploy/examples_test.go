package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	sigsyaml "sigs.k8s.io/yaml"
)

// object is one document of an example, decoded strictly into its API type.
type object struct {
	kind string
	meta metav1.ObjectMeta
	spec any // a proto.Message for Istio's kinds, the Go type's pointer otherwise
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// objects decodes every document of the example files matching glob
// strictly: Istio's kinds with protojson into istio.io/api (the client-go
// types accept unknown fields), the others into their Go API types.
func objects(t *testing.T, glob string) []object {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s: %v", glob, err)
	}
	var out []object
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docSeparator.Split(string(data), -1) {
			if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) == "" {
				continue
			}
			o, err := decodeObject([]byte(d))
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			out = append(out, o)
		}
	}
	return out
}

func decodeObject(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
		return object{}, err
	}
	o := object{kind: tm.Kind}
	istio := func(spec proto.Message) (object, error) {
		o.spec = spec
		return o, strictIstio(doc, &o.meta, spec)
	}
	k8s := func(v any, meta func() metav1.ObjectMeta) (object, error) {
		if err := strictDecode(doc, v); err != nil {
			return o, err
		}
		o.spec, o.meta = v, meta()
		return o, nil
	}
	switch tm.APIVersion + " " + tm.Kind {
	case "install.istio.io/v1alpha1 IstioOperator":
		var op struct {
			metav1.TypeMeta `json:",inline"`
			Spec            struct {
				MeshConfig json.RawMessage `json:"meshConfig"`
			} `json:"spec"`
		}
		if err := strictDecode(doc, &op); err != nil {
			return o, err
		}
		var mc meshv1alpha1.MeshConfig
		if err := protojson.Unmarshal(op.Spec.MeshConfig, &mc); err != nil {
			return o, fmt.Errorf("meshConfig: %w", err)
		}
		o.spec = &mc
		return o, nil
	case "security.istio.io/v1 AuthorizationPolicy":
		return istio(&securityv1beta1.AuthorizationPolicy{})
	case "security.istio.io/v1 PeerAuthentication":
		return istio(&securityv1beta1.PeerAuthentication{})
	case "networking.istio.io/v1 DestinationRule":
		return istio(&networkingv1alpha3.DestinationRule{})
	case "gateway.envoyproxy.io/v1alpha1 SecurityPolicy":
		var v egv1a1.SecurityPolicy
		return k8s(&v, func() metav1.ObjectMeta { return v.ObjectMeta })
	case "gateway.envoyproxy.io/v1alpha1 ClientTrafficPolicy":
		var v egv1a1.ClientTrafficPolicy
		return k8s(&v, func() metav1.ObjectMeta { return v.ObjectMeta })
	case "gateway.envoyproxy.io/v1alpha1 EnvoyProxy":
		var v egv1a1.EnvoyProxy
		return k8s(&v, func() metav1.ObjectMeta { return v.ObjectMeta })
	case "gateway.networking.k8s.io/v1beta1 ReferenceGrant":
		var v gwv1beta1.ReferenceGrant
		return k8s(&v, func() metav1.ObjectMeta { return v.ObjectMeta })
	case "gateway.networking.k8s.io/v1 BackendTLSPolicy":
		var v gwv1.BackendTLSPolicy
		return k8s(&v, func() metav1.ObjectMeta { return v.ObjectMeta })
	case "gateway.networking.k8s.io/v1 Gateway":
		var v gwv1.Gateway
		return k8s(&v, func() metav1.ObjectMeta { return v.ObjectMeta })
	}
	return o, fmt.Errorf("an object of an unexpected kind, %s %s", tm.APIVersion, tm.Kind)
}

// only returns the one spec of type T among objs.
func only[T any](t *testing.T, objs []object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if s, ok := o.spec.(T); ok {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T, want one", len(found), zero)
	}
	return found[0]
}

// TestIstioExamplesDecode: every document under deploy/istio is an object
// of Istio's API, with no field its API lacks.
func TestIstioExamplesDecode(t *testing.T) {
	if n := len(objects(t, "istio/*.yaml")); n < 5 {
		t.Errorf("%d Istio objects, want the operator, the CUSTOM policy, and those of in-mesh.yaml and outside-mesh.yaml", n)
	}
}

// TestIstioInMeshIsTheChart: deploy/istio/in-mesh.yaml's AuthorizationPolicy
// is the one the chart renders with the Istio values, and its
// PeerAuthentication requires Istio's mutual TLS of the chart's pods on
// every port but the admin port.
func TestIstioInMeshIsTheChart(t *testing.T) {
	r := render(t, valuesFiles["redis-istio"]...)
	objs := objects(t, "istio/in-mesh.yaml")
	ap := only[*securityv1beta1.AuthorizationPolicy](t, objs)
	if len(r.authorizationPolicies) != 1 || !proto.Equal(ap, &r.authorizationPolicies[0].Spec) {
		t.Errorf("in-mesh.yaml's AuthorizationPolicy is not the chart's:\n%v\n%v", ap, r.authorizationPolicies)
	}
	for _, o := range objs {
		if o.meta.Namespace != "extauthz" || o.meta.Name != r.deployment().Name {
			t.Errorf("%s %s/%s is not beside the chart's pods in extauthz", o.kind, o.meta.Namespace, o.meta.Name)
		}
	}
	pa := only[*securityv1beta1.PeerAuthentication](t, objs)
	if !selects(pa.GetSelector().GetMatchLabels(), r.deployment().Spec.Template.Labels) {
		t.Errorf("the PeerAuthentication selects %v, not the pods", pa.GetSelector().GetMatchLabels())
	}
	if pa.GetMtls().GetMode() != securityv1beta1.PeerAuthentication_MutualTLS_STRICT {
		t.Errorf("the PeerAuthentication's mode is %v, want STRICT", pa.GetMtls().GetMode())
	}
	admin := uint32(containerPorts(r)["admin"])
	for port, m := range pa.GetPortLevelMtls() {
		if port != admin || m.GetMode() != securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE {
			t.Errorf("port %d is %v: only the admin port %d takes plaintext", port, m.GetMode(), admin)
		}
	}
}

// TestIstioOutsideMeshIsTheTLSValues: the DestinationRule of
// deploy/istio/outside-mesh.yaml makes the callers of the gRPC provider
// present their Istio certificates to the chart's Service, and expects
// extauthz's service account's SPIFFE ID; the TLS values trust Istio's
// root CA and allow the SPIFFE IDs of principals the in-mesh policy allows.
func TestIstioOutsideMeshIsTheTLSValues(t *testing.T) {
	r := render(t, valuesFiles["tls"]...)
	dr := only[*networkingv1alpha3.DestinationRule](t, objects(t, "istio/outside-mesh.yaml"))
	var grpcHost string
	for _, p := range only[*meshv1alpha1.MeshConfig](t, objects(t, "istio/meshconfig.yaml")).GetExtensionProviders() {
		if g := p.GetEnvoyExtAuthzGrpc(); g != nil {
			grpcHost = g.GetService()
		}
	}
	if want := r.services[0].Name + ".extauthz.svc.cluster.local"; dr.GetHost() != want || grpcHost != want {
		t.Errorf("the DestinationRule is for %s and the gRPC provider calls %s; the chart serves %s", dr.GetHost(), grpcHost, want)
	}
	grpcPort := uint32(containerPorts(r)["grpc"])
	i := slices.IndexFunc(dr.GetTrafficPolicy().GetPortLevelSettings(), func(p *networkingv1alpha3.TrafficPolicy_PortTrafficPolicy) bool {
		return p.GetPort().GetNumber() == grpcPort
	})
	if i < 0 {
		t.Fatalf("the DestinationRule has no settings for the gRPC port %d", grpcPort)
	}
	tls := dr.GetTrafficPolicy().GetPortLevelSettings()[i].GetTls()
	sa := "spiffe://cluster.local/ns/extauthz/sa/" + r.deployment().Spec.Template.Spec.ServiceAccountName
	if tls.GetMode() != networkingv1alpha3.ClientTLSSettings_ISTIO_MUTUAL || !slices.Equal(tls.GetSubjectAltNames(), []string{sa}) {
		t.Errorf("the gRPC port's TLS is %v, want ISTIO_MUTUAL expecting %s", tls, sa)
	}
	cfg, err := r.config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.TLS == nil || cfg.Server.TLS.ClientCA != "urn:k8s:secret:istio-ca-root-cert:root-cert.pem" || len(cfg.Server.TLS.AllowedCallers) == 0 {
		t.Fatalf("the TLS values do not trust Istio's root CA for named callers: %+v", cfg.Server.TLS)
	}
	principals := only[*securityv1beta1.AuthorizationPolicy](t, objects(t, "istio/in-mesh.yaml")).GetRules()[0].GetFrom()[0].GetSource().GetPrincipals()
	for _, c := range cfg.Server.TLS.AllowedCallers {
		if p, ok := strings.CutPrefix(c, "spiffe://"); !ok || !slices.Contains(principals, p) {
			t.Errorf("allowed caller %s is not the SPIFFE ID of a principal in-mesh.yaml allows (%v)", c, principals)
		}
	}
}

// TestEnvoyGatewayPresentsItsCertificate: the Envoy Gateway examples
// decode strictly into Envoy Gateway's and the Gateway API's types; the
// BackendTLSPolicy covers the Service the SecurityPolicy calls, from its
// namespace, and the Gateway the ClientTrafficPolicy targets names the
// EnvoyProxy whose client certificate Envoy presents.
func TestEnvoyGatewayPresentsItsCertificate(t *testing.T) {
	objs := objects(t, "envoy-gateway/*.yaml")
	sp := only[*egv1a1.SecurityPolicy](t, objs)
	ref := sp.Spec.ExtAuth.GRPC.BackendRefs[0]
	btp := only[*gwv1.BackendTLSPolicy](t, objs)
	if ref.Namespace == nil || btp.Namespace != string(*ref.Namespace) ||
		!slices.ContainsFunc(btp.Spec.TargetRefs, func(r gwv1.LocalPolicyTargetReferenceWithSectionName) bool {
			return r.Kind == "Service" && r.Name == ref.Name
		}) {
		t.Errorf("the BackendTLSPolicy %s/%s does not cover the Service %v/%s the SecurityPolicy calls", btp.Namespace, btp.Name, ref.Namespace, ref.Name)
	}
	if h := string(btp.Spec.Validation.Hostname); !strings.HasPrefix(h, string(ref.Name)+"."+btp.Namespace+".svc") || len(btp.Spec.Validation.CACertificateRefs) == 0 {
		t.Errorf("the BackendTLSPolicy expects %q with CAs %v: want the Service's name and a CA", h, btp.Spec.Validation.CACertificateRefs)
	}
	gw := only[*gwv1.Gateway](t, objs)
	ctp := only[*egv1a1.ClientTrafficPolicy](t, objs)
	if gw.Namespace != ctp.Namespace || string(ctp.Spec.TargetRefs[0].Name) != gw.Name {
		t.Errorf("the ClientTrafficPolicy targets %s, not the Gateway %s/%s", ctp.Spec.TargetRefs[0].Name, gw.Namespace, gw.Name)
	}
	ep := only[*egv1a1.EnvoyProxy](t, objs)
	p := gw.Spec.Infrastructure.ParametersRef
	if p == nil || p.Kind != "EnvoyProxy" || p.Name != ep.Name || ep.Namespace != gw.Namespace {
		t.Errorf("the Gateway's parametersRef %+v is not the EnvoyProxy %s/%s", p, ep.Namespace, ep.Name)
	}
	if ep.Spec.BackendTLS == nil || ep.Spec.BackendTLS.ClientCertificateRef == nil ||
		ep.Spec.BackendTLS.ClientCertificateRef.Namespace != nil && string(*ep.Spec.BackendTLS.ClientCertificateRef.Namespace) != ep.Namespace {
		t.Errorf("the EnvoyProxy presents no client certificate from its own namespace: %+v", ep.Spec.BackendTLS)
	}
}
