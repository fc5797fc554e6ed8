package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/nvs"
)

// nvsCmd generates and reads ESP-IDF NVS partition images without a database.
func nvsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "nvs", Short: "Generate and read ESP32 NVS partition images"}
	gen := &cobra.Command{Use: "generate CSV OUT SIZE",
		Short: "Write an NVS partition from ESP-IDF's CSV format, byte-identical to nvs_partition_gen.py generate",
		Long: "Reads CSV (key,type,encoding,value; file rows relative to the working directory) and writes an NVS\n" +
			"format version 2 partition of SIZE bytes (a multiple of 4096, at least 0x3000) to OUT.",
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			size, err := nvs.ParseSize(args[2])
			if err != nil {
				return err
			}
			if err := nvs.CheckSize(size); err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			items, err := nvs.ParseCSV(f, os.ReadFile)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			img, err := nvs.Generate(items, size)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if err := os.WriteFile(args[1], img, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d bytes, %d rows\n", args[1], len(img), len(items))
			return nil
		}}
	dump := &cobra.Command{Use: "dump PARTITION", Short: "List the namespaces, keys, types and values of an NVS partition image",
		Long: "Exits with status 1 when entries or pages were damaged (they are listed as problems).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			img, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			p, err := nvs.Parse(img)
			if err != nil {
				return err
			}
			if err := p.Dump(cmd.OutOrStdout()); err != nil {
				return err
			}
			if len(p.Problems) > 0 {
				return &exitErr{code: 1, err: fmt.Errorf("%s: %d damaged page(s) or entries", args[0], len(p.Problems))}
			}
			return nil
		}}
	cmd.AddCommand(gen, dump)
	return cmd
}
