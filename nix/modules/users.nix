# pantheros.users: someone who can log in can also administer the machine. A host that turns on a
# PantherOS feature (storage, impermanence, security or a role) must have a user who can log in
# (a password on the console, or an SSH key where sshd lets that user in) and become root (root
# itself, sudo for wheel with a password or without one, or su with root's password), unless it
# says on purpose that nobody may (pantheros.users.allowNoAdministrator). The credentials that
# survive the rollback are impermanence.nix's concern (docs/decisions.md D90, D91).
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.pantheros.users;
  users = lib.filterAttrs (_: u: u.enable or true) config.users.users;
  ssh = config.services.openssh;
  sudo = config.security.sudo;
  # Other ways to root, read only where their module is part of the configuration.
  sudoRs = config.security.sudo-rs or { enable = false; };
  doas = config.security.doas or { enable = false; };

  # users-groups.nix `allowsLogin`: a hash that lets a password log in.
  allowsLogin = hash: hash == "" || !(lib.elem hash [ null "!" "!!" "*" ]);
  # A password the user can type: to the console, to sudo or to su. An empty hash logs in on
  # the console without one but is refused by sudo and su.
  hasPassword =
    u:
    u.hashedPasswordFile != null
    || (u.hashedPassword != null && allowsLogin u.hashedPassword && u.hashedPassword != "")
    || (u.initialHashedPassword != null && allowsLogin u.initialHashedPassword && u.initialHashedPassword != "")
    || (u.password != null && u.password != "")
    || (u.initialPassword != null && u.initialPassword != "");
  consoleLogin =
    u:
    hasPassword u
    || (u.hashedPassword or null) == ""
    || (u.initialHashedPassword or null) == ""
    || (u.password or null) == ""
    || (u.initialPassword or null) == "";
  hasKeys = u: u.openssh.authorizedKeys.keys != [ ] || u.openssh.authorizedKeys.keyFiles != [ ];
  isRoot = name: u: name == "root" || u.uid == 0;
  rootOverSsh = lib.elem ssh.settings.PermitRootLogin [
    "yes"
    "prohibit-password"
    "without-password"
  ];
  sshLogin =
    name: u:
    ssh.enable
    && (hasKeys u || (ssh.settings.PasswordAuthentication == true && hasPassword u))
    && (!isRoot name u || rootOverSsh || (ssh.settings.PermitRootLogin == "yes"));
  canLogIn = name: u: consoleLogin u || sshLogin name u;

  inWheel =
    name: u:
    u.group == "wheel"
    || lib.elem "wheel" u.extraGroups
    || lib.elem name (config.users.groups.wheel.members or [ ]);
  wheelTool =
    tool: name: u:
    (tool.enable or false) && inWheel name u && (!(tool.wheelNeedsPassword or true) || hasPassword u);
  rootHasPassword = users ? root && hasPassword users.root;
  canAdminister =
    name: u:
    isRoot name u || wheelTool sudo name u || wheelTool sudoRs name u || wheelTool doas name u || rootHasPassword;

  loginUsers = lib.attrNames (lib.filterAttrs canLogIn users);
  administrators = lib.attrNames (lib.filterAttrs (name: u: canLogIn name u && canAdminister name u) users);
in
{
  imports = [ ./manifest.nix ];

  options.pantheros.users = {
    allowNoAdministrator = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Say on purpose that nobody who can log in may become root (an appliance changed only by
        deploying a new configuration). Without it, a host with a PantherOS feature on must have
        a user who can log in and become root: root itself, a wheel user with sudo (a password
        for it, or `security.sudo.wheelNeedsPassword = false`), or anyone when root has a
        password (su).
      '';
    };
    loginUsers = mkOption {
      type = types.listOf types.str;
      internal = true;
      readOnly = true;
      description = "Users who can log in: a password on the console, or SSH where sshd lets them in.";
    };
    administrators = mkOption {
      type = types.listOf types.str;
      internal = true;
      readOnly = true;
      description = "Users who can log in and become root.";
    };
  };

  config = lib.mkMerge [
    {
      pantheros.users = { inherit loginUsers administrators; };
    }
    (lib.mkIf config.pantheros.installManifest {
      assertions = [
        {
          assertion = cfg.allowNoAdministrator || administrators != [ ];
          message = lib.concatStrings [
            "pantheros.users: nobody who can log in can also become root"
            (if loginUsers == [ ] then " (nobody can log in at all)" else " (can log in: ${lib.concatStringsSep ", " loginUsers})")
            ". Give a user a way in (a password, or openssh.authorizedKeys.keys with SSH on) and a way to root:"
            " extraGroups = [ \"wheel\" ] with a password for sudo (hashedPasswordFile, under /persist with"
            " pantheros.impermanence), or security.sudo.wheelNeedsPassword = false; or give root a password."
            " If nobody may administer this machine on purpose, set pantheros.users.allowNoAdministrator = true"
            " (docs/decisions.md D93)."
          ];
        }
      ];
    })
  ];
}
