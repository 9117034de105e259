package config

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestReadmeReference checks that the README's configuration reference
// lists every field of the configuration, and nothing else.
func TestReadmeReference(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	documented := map[string]bool{}
	inTable := false
	field := regexp.MustCompile("`([^`]+)`")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "### Configuration reference":
			inTable = true
		case inTable && strings.HasPrefix(line, "| `"):
			first := strings.Split(line, "|")[1]
			for _, m := range field.FindAllStringSubmatch(first, -1) {
				documented[m[1]] = true
			}
		case inTable && strings.HasPrefix(line, "#"):
			inTable = false
		}
	}
	if len(documented) == 0 {
		t.Fatal("no configuration reference in the README")
	}
	var fields []string
	collect(reflect.TypeFor[Config](), "", &fields)
	for _, f := range fields {
		if !documented[f] {
			t.Errorf("the README's reference lacks %s", f)
		}
		delete(documented, f)
	}
	var extra []string
	for f := range documented {
		extra = append(extra, f)
	}
	sort.Strings(extra)
	for _, f := range extra {
		t.Errorf("the README's reference lists %s, which the configuration does not have", f)
	}
}

// collect lists the YAML paths of t's fields as the README writes them:
// policies.<name>.url, routes[].host. A policy's own store is one entry.
func collect(t reflect.Type, prefix string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case path == "policies.<name>.store" || ft == reflect.TypeFor[Duration]():
			*out = append(*out, path)
		case ft.Kind() == reflect.Struct:
			collect(ft, path, out)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() != reflect.String:
			collect(ft.Elem(), path+".<name>", out)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			collect(ft.Elem(), path+"[]", out)
		default:
			*out = append(*out, path)
		}
	}
	slices.Sort(*out)
}
