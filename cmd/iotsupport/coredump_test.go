package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iotsupport/iotsupport/internal/espimage/espimagetest"
	"github.com/iotsupport/iotsupport/internal/proctest"
)

func TestCoredumpDecodeCommand(t *testing.T) {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, tc := range espimagetest.Cases {
		elf := espimagetest.ELFPath(t, tc)
		dump := filepath.Join(filepath.Dir(elf), "coredump.b64")
		exp, err := os.ReadFile(filepath.Join(filepath.Dir(elf), "expected_output"))
		if err != nil {
			t.Fatal(err)
		}
		task := regexp.MustCompile(`Crashed task handle: 0x[0-9a-f]+, name: '([^']*)'`).FindSubmatch(exp)[1]
		out, errOut, code := proctest.Run(t, env, "coredump", "decode", "--elf", elf, dump)
		if code != 0 || !strings.Contains(out, "Crashed task handle:") || !strings.Contains(out, "'"+string(task)+"'") {
			t.Fatalf("%s: exit %d\n%s\n%s", tc, code, out, errOut)
		}
		out, _, code = proctest.Run(t, env, "coredump", "decode", "--json", "--elf", elf, dump)
		var rep struct {
			CrashedTask struct{ Name string } `json:"crashed_task"`
			Threads     []json.RawMessage     `json:"threads"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.CrashedTask.Name != string(task) || len(rep.Threads) == 0 {
			t.Fatalf("%s --json: exit %d %.300s", tc, code, out)
		}
	}
	junk := filepath.Join(t.TempDir(), "junk.bin")
	_ = os.WriteFile(junk, []byte("this is not a core dump"), 0o644)
	if _, _, code := proctest.Run(t, env, "coredump", "decode", "--elf", espimagetest.ELFPath(t, "esp32"), junk); code == 0 {
		t.Fatal("undecodable input exited 0")
	}
}
