package shepherd

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Host keys are pinned on first use: the first key a machine presents is
// kept in BMDB (machine_ssh_host_key), and a later connection presenting
// another one is refused.

// PinnedHostKey returns the host key pinned for a machine, or nil.
func PinnedHostKey(ctx context.Context, db bmdb.DBTX, machine uuid.UUID) (ssh.PublicKey, error) {
	var wire []byte
	err := db.QueryRow(ctx, `SELECT ssh_host_key FROM machine_ssh_host_key WHERE machine_id = $1`, machine).Scan(&wire)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := ssh.ParsePublicKey(wire)
	if err != nil {
		return nil, fmt.Errorf("pinned host key of machine %s is unreadable: %w", machine, err)
	}
	return key, nil
}

// PinHostKey pins key for a machine unless one is pinned already; it returns
// the key that is pinned afterwards.
func PinHostKey(ctx context.Context, db bmdb.DBTX, machine uuid.UUID, key ssh.PublicKey) (ssh.PublicKey, error) {
	if _, err := db.Exec(ctx, `
		INSERT INTO machine_ssh_host_key (machine_id, ssh_host_key) VALUES ($1, $2)
		ON CONFLICT (machine_id) DO NOTHING`, machine, key.Marshal()); err != nil {
		return nil, err
	}
	return PinnedHostKey(ctx, db, machine)
}

// ForgetHostKey removes a machine's pinned host key (after a reinstall), so
// that the next connection pins the new one. It reports whether one was pinned.
func ForgetHostKey(ctx context.Context, db bmdb.DBTX, machine uuid.UUID) (bool, error) {
	tag, err := db.Exec(ctx, `DELETE FROM machine_ssh_host_key WHERE machine_id = $1`, machine)
	return tag.RowsAffected() == 1, err
}

// hostKeyMismatch is the handshake error when a machine presents a key other
// than its pinned one.
type hostKeyMismatch struct {
	pinned, presented ssh.PublicKey
}

func (e *hostKeyMismatch) Error() string {
	return fmt.Sprintf("SSH host key changed: pinned %s, presented %s %s",
		ssh.FingerprintSHA256(e.pinned), e.presented.Type(), ssh.FingerprintSHA256(e.presented))
}

func sameKey(a, b ssh.PublicKey) bool {
	return string(a.Marshal()) == string(b.Marshal())
}
