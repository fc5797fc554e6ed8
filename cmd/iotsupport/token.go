package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/iotsupport/iotsupport/internal/app"
	"github.com/iotsupport/iotsupport/internal/auth"
)

func tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens (create, list, revoke)"}
	withTokens := func(fn func(cmd *cobra.Command, t *auth.Tokens) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			d, err := openExisting(ctx, cfg, true, app.NewLogger(cfg, os.Stderr))
			if err != nil {
				return err
			}
			defer d.Close()
			return fn(cmd, auth.NewTokens(d))
		}
	}
	var name, role string
	create := &cobra.Command{Use: "create", Short: "Create a token and print its secret once",
		RunE: withTokens(func(cmd *cobra.Command, t *auth.Tokens) error {
			tk, secret, err := t.Create(cmd.Context(), name, role)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "created token %q (role %s); the secret is printed once:\n", tk.Name, tk.Role)
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			return nil
		})}
	create.Flags().StringVar(&name, "name", "", "token name (unique among active tokens)")
	create.Flags().StringVar(&role, "role", "", "viewer, editor, admin or pipeline")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("role")
	list := &cobra.Command{Use: "list", Short: "List tokens",
		RunE: withTokens(func(cmd *cobra.Command, t *auth.Tokens) error {
			ts, err := t.List(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tROLE\tCREATED\tLAST USED\tSTATE")
			for _, tk := range ts {
				state := "active"
				if tk.RevokedAt != nil {
					state = "revoked " + tk.RevokedAt.Format(time.RFC3339)
				}
				used := "-"
				if tk.LastUsedAt != nil {
					used = tk.LastUsedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", tk.ID, tk.Name, tk.Role, tk.CreatedAt.Format(time.RFC3339), used, state)
			}
			return w.Flush()
		})}
	var revokeID int64
	revoke := &cobra.Command{Use: "revoke NAME | revoke --id ID", Short: "Revoke a token by name, or by id with --id",
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("id") {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return withTokens(func(cmd *cobra.Command, t *auth.Tokens) error {
				// A name and an id never stand for each other: "revoke 8" is the token named "8".
				revoke, what := func() error { return t.RevokeByID(cmd.Context(), revokeID) }, fmt.Sprintf("token %d", revokeID)
				if !cmd.Flags().Changed("id") {
					revoke, what = func() error { return t.RevokeByName(cmd.Context(), args[0]) }, fmt.Sprintf("token %q", args[0])
				}
				if err := revoke(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", what)
				return nil
			})(cmd, args)
		}}
	revoke.Flags().Int64Var(&revokeID, "id", 0, "revoke the token with this id instead of by name")
	cmd.AddCommand(create, list, revoke)
	return cmd
}
