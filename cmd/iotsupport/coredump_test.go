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

// Without --elf the report still holds what the dump does: chip, crashed task, registers,
// every task with its raw return addresses.
func TestCoredumpDecodeCommandWithoutELF(t *testing.T) {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	dump := filepath.Join(filepath.Dir(espimagetest.ELFPath(t, "esp32c3")), "coredump.b64")
	out, errOut, code := proctest.Run(t, env, "coredump", "decode", "--json", dump)
	var rep struct {
		Chip        string `json:"chip"`
		CrashedTask struct {
			TCB  uint32 `json:"tcb"`
			Name string `json:"name"`
		} `json:"crashed_task"`
		Threads []struct {
			Name   string `json:"name"`
			Frames []struct {
				PC uint32 `json:"pc"`
			} `json:"frames"`
		} `json:"threads"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("exit %d: %.300s %s", code, out, errOut)
	}
	// esp32c3/expected_output: main crashed in panic_abort called from esp_system_abort; esp_timer
	// waits in vPortClearInterruptMaskFromISR called from vPortExitCritical.
	if rep.Chip != "ESP32-C3" || rep.CrashedTask.Name != "main" || rep.CrashedTask.TCB != 0x3fc8ec30 || len(rep.Threads) != 3 {
		t.Fatalf("report: %+v", rep)
	}
	if th := rep.Threads[2]; th.Name != "esp_timer" || len(th.Frames) < 2 || th.Frames[0].PC != 0x4038424e || th.Frames[1].PC != 0x403842b4 {
		t.Fatalf("esp_timer: %+v", th)
	}
	out, _, code = proctest.Run(t, env, "coredump", "decode", dump)
	if code != 0 || !strings.Contains(out, "App ELF: not given") || !strings.Contains(out, "Crashed task handle: 0x3fc8ec30, name: 'main'") {
		t.Fatalf("text: exit %d\n%s", code, out)
	}
}
