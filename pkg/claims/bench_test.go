package claims

import "testing"

// typical is the kind of expression a policy holds.
const typical = "Equals(`grp`, `admin`) && SplitContains(`scope`, ` `, `deploy`) && " +
	"(OneOf(`areas`, `lab`, `home`) || Prefix(`user.name`, `John`)) && !Equals(`user.status`, `banned`)"

func BenchmarkEval(b *testing.B) {
	doc := mustParse(b, sample)
	prog := MustCompile(typical)
	if !prog.Eval(doc) {
		b.Fatal("expression is false")
	}
	b.ReportAllocs()
	for b.Loop() {
		prog.Eval(doc)
	}
}

func BenchmarkEvalParallel(b *testing.B) {
	doc := mustParse(b, sample)
	prog := MustCompile(typical)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			prog.Eval(doc)
		}
	})
}

func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(typical); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	data := []byte(sample)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
