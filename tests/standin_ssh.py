"""An SSH server class for stand-in nodes (asyncssh): it takes any key of the user it is for,
and counts the logins it took."""

import asyncssh


class AcceptKeys(asyncssh.SSHServer):
    user: str | None = None  # None: any user
    logins = 0

    def begin_auth(self, username):
        return True

    def public_key_auth_supported(self):
        return True

    def validate_public_key(self, username, key):
        type(self).logins += 1
        return self.user is None or username == self.user
