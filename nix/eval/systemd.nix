# The systemd unit options of NixOS and the way NixOS turns a unit into a file, for evaluating
# the PantherOS modules without nixpkgs. Written for PantherOS after reading nixpkgs'
# nixos/lib/systemd-unit-options.nix (option declarations), nixos/lib/systemd-types.nix (the
# unit set types) and nixos/lib/systemd-lib.nix (unitConfig, serviceToUnit, attrsToSection).
# Only the option names and their merge semantics must agree with NixOS; see docs/decisions.md
# D26.
{ lib, pkgs }:
let
  inherit (lib) mkOption types;

  # systemd-lib.nix `unitNameType`: a unit name with its type suffix.
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  # unit-options' `environment` and systemd.nix's `globalEnvironment`: a null unsets a variable.
  environmentType =
    with types;
    attrsOf (
      nullOr (oneOf [
        str
        path
        package
      ])
    );

  unitNames = mkOption {
    type = types.listOf unitNameType;
    default = [ ];
  };

  # systemd-unit-options.nix `unitOption`: repeatable settings are lists and concatenate; any
  # other setting must be defined once or identically (mergeEqualOption), after priorities.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        effective = lib.filterOverrides defs;
      in
      if lib.isList (lib.head effective).value then
        lib.concatMap (
          def:
          if lib.isList def.value then
            def.value
          else
            throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.options.showDefs effective}"
        ) effective
      else
        lib.mergeEqualOption loc effective;
  };
  section = mkOption {
    type = types.attrsOf unitOption;
    default = { };
  };

  # systemd-unit-options.nix `checkService`: Type and Restart take one of systemd's values.
  serviceSection = mkOption {
    type = types.addCheck (types.attrsOf unitOption) (
      attrs:
      let
        plain = v: if lib.isAttrs v && v ? _type then v.content else v;
        oneOf =
          key: values: !(attrs ? ${key}) || lib.elem (plain attrs.${key}) values;
      in
      oneOf "Type" [
        "exec"
        "simple"
        "forking"
        "oneshot"
        "dbus"
        "notify"
        "notify-reload"
        "idle"
      ]
      && oneOf "Restart" [
        "no"
        "on-success"
        "on-failure"
        "on-abnormal"
        "on-abort"
        "on-watchdog"
        "always"
      ]
    );
    default = { };
  };

  # systemd-unit-options.nix `sharedOptions` and `commonUnitOptions`.
  commonUnitOptions =
    { name, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        name = mkOption {
          type = types.str;
          internal = true;
        };
        overrideStrategy = mkOption {
          type = types.enum [
            "asDropinIfExists"
            "asDropin"
          ];
          default = "asDropinIfExists";
        };
        requiredBy = unitNames;
        wantedBy = unitNames;
        upheldBy = unitNames;
        aliases = unitNames;
        description = mkOption {
          type = types.singleLineStr;
          default = "";
        };
        documentation = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        requires = unitNames;
        wants = unitNames;
        upholds = unitNames;
        after = unitNames;
        before = unitNames;
        bindsTo = unitNames;
        partOf = unitNames;
        conflicts = unitNames;
        requisite = unitNames;
        onFailure = unitNames;
        onSuccess = unitNames;
        unitConfig = section;
        startLimitBurst = mkOption { type = types.int; };
        startLimitIntervalSec = mkOption { type = types.int; };
      };
    };

  # systemd-unit-options.nix `stage2CommonUnitOptions`: only stage 2 units restart on change.
  stage2UnitOptions = {
    options = {
      restartTriggers = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      reloadTriggers = mkOption {
        type = types.listOf unitOption;
        default = [ ];
      };
    };
  };

  # systemd-lib.nix `unitConfig`: the dependency options become [Unit] settings.
  unitConfig =
    { config, options, ... }:
    let
      joined = key: list: lib.optionalAttrs (list != [ ]) { ${key} = toString list; };
    in
    {
      config.unitConfig =
        joined "Requires" config.requires
        // joined "Wants" config.wants
        // joined "Upholds" config.upholds
        // joined "After" config.after
        // joined "Before" config.before
        // joined "BindsTo" config.bindsTo
        // joined "PartOf" config.partOf
        // joined "Conflicts" config.conflicts
        // joined "Requisite" config.requisite
        // lib.optionalAttrs (config.description != "") { Description = config.description; }
        // joined "Documentation" config.documentation
        // joined "OnFailure" config.onFailure
        // joined "OnSuccess" config.onSuccess
        // lib.optionalAttrs options.startLimitIntervalSec.isDefined {
          StartLimitIntervalSec = toString config.startLimitIntervalSec;
        }
        // lib.optionalAttrs options.startLimitBurst.isDefined {
          StartLimitBurst = toString config.startLimitBurst;
        };
    };

  # systemd-unit-options.nix `serviceOptions`; scripts become ExecStart* as in NixOS.
  serviceOptions =
    { name, config, ... }:
    let
      script =
        suffix: text:
        "${pkgs.writeShellScriptBin "${name}-${suffix}" text}/bin/${name}-${suffix}";
      lines = mkOption {
        type = types.lines;
        default = "";
      };
    in
    {
      options = {
        environment = mkOption {
          type = environmentType;
          default = { };
        };
        path = mkOption {
          type =
            with types;
            listOf (oneOf [
              package
              str
            ]);
          default = [ ];
        };
        serviceConfig = serviceSection;
        script = lines;
        scriptArgs = mkOption {
          type = types.str;
          default = "";
        };
        preStart = lines;
        postStart = lines;
        reload = lines;
        preStop = lines;
        postStop = lines;
        enableStrictShellChecks = mkOption {
          type = types.bool;
          default = false;
        };
      };
      config = lib.mkMerge [
        (lib.mkIf (config.preStart != "") {
          serviceConfig.ExecStartPre = [ (script "pre-start" config.preStart) ];
        })
        (lib.mkIf (config.script != "") {
          serviceConfig.ExecStart = script "start" config.script + " " + config.scriptArgs;
        })
        (lib.mkIf (config.postStart != "") {
          serviceConfig.ExecStartPost = [ (script "post-start" config.postStart) ];
        })
        (lib.mkIf (config.reload != "") { serviceConfig.ExecReload = script "reload" config.reload; })
        (lib.mkIf (config.preStop != "") { serviceConfig.ExecStop = script "pre-stop" config.preStop; })
        (lib.mkIf (config.postStop != "") {
          serviceConfig.ExecStopPost = script "post-stop" config.postStop;
        })
      ];
    };

  # systemd-lib.nix `serviceConfig`: the unit's file name, and PATH from `path`.
  serviceName =
    { name, config, ... }:
    {
      config.name = "${name}.service";
      config.environment.PATH = lib.mkIf (config.path != [ ]) (
        "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}"
      );
    };

  # systemd-unit-options.nix `stage2ServiceOptions`.
  stage2ServiceOptions = {
    options = {
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      reloadIfChanged = mkOption {
        type = types.bool;
        default = false;
      };
      stopIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      notSocketActivated = mkOption {
        type = types.bool;
        default = false;
      };
      startAt = mkOption {
        type = with types; either str (listOf str);
        default = [ ];
        apply = v: if lib.isList v then v else [ v ];
      };
    };
  };

  # systemd-lib.nix `stage2ServiceConfig`: stage 2 services get a minimal PATH by default.
  stage2DefaultPath = {
    config.path = lib.mkAfter [
      pkgs.coreutils
      pkgs.findutils
      pkgs.gnugrep
      pkgs.gnused
      pkgs.systemd
    ];
  };

  named =
    suffix:
    { name, ... }:
    {
      config.name = "${name}.${suffix}";
    };

  timerOptions = {
    options.timerConfig = section;
  };

  # systemd-unit-options.nix `mountOptions` and systemd-lib.nix `mountConfig`: mount units are
  # a list, named after `where`.
  mountOptions =
    { config, ... }:
    {
      options = {
        what = mkOption { type = types.str; };
        where = mkOption { type = types.str; };
        type = mkOption {
          type = types.str;
          default = "";
        };
        options = mkOption {
          type = types.commas;
          default = "";
        };
        mountConfig = section;
      };
      config = {
        name = "${escapeSystemdPath config.where}.mount";
        mountConfig = {
          What = config.what;
          Where = config.where;
        }
        // lib.optionalAttrs (config.type != "") { Type = config.type; }
        // lib.optionalAttrs (config.options != "") { Options = config.options; };
      };
    };

  # What `systemd-escape --path` does (nixos/lib/utils.nix `escapeSystemdPath` gives the same):
  # slashes become dashes, anything outside [A-Za-z0-9:_.] (and a leading dot) becomes \xNN.
  escapeSystemdPath =
    path:
    let
      trimmed = lib.removeSuffix "/" (lib.removePrefix "/" (lib.strings.normalizePath path));
      plain = c: builtins.match "[A-Za-z0-9:_.]" c != null;
      hex = c: "\\x" + lib.toLower (lib.toHexString (lib.strings.charToInt c));
      escape =
        i: c:
        if c == "/" then
          "-"
        else if plain c && !(i == 0 && c == ".") then
          c
        else
          hex c;
    in
    if trimmed == "" then "-" else lib.concatStrings (lib.imap0 escape (lib.stringToCharacters trimmed));

  # systemd-lib.nix `toOption` and `attrsToSection`: one `Key=value` line per value, lists
  # repeat the key, attribute names in Nix's (sorted) order.
  toOption =
    x:
    if x == true then
      "true"
    else if x == false then
      "false"
    else
      toString x;
  attrsToSection =
    attrs:
    lib.concatStrings (
      lib.concatLists (
        lib.mapAttrsToList (
          key: value: map (x: "${key}=${toOption x}\n") (if lib.isList value then value else [ value ])
        ) attrs
      )
    );
in
{
  inherit escapeSystemdPath;

  types = {
    environment = environmentType;
    initrdServices = types.attrsOf (
      types.submodule [
        commonUnitOptions
        serviceOptions
        unitConfig
        serviceName
      ]
    );
    services = types.attrsOf (
      types.submodule [
        commonUnitOptions
        stage2UnitOptions
        serviceOptions
        stage2ServiceOptions
        unitConfig
        serviceName
        stage2DefaultPath
      ]
    );
    timers = types.attrsOf (
      types.submodule [
        commonUnitOptions
        stage2UnitOptions
        timerOptions
        unitConfig
        (named "timer")
      ]
    );
    initrdTargets = types.attrsOf (
      types.submodule [
        commonUnitOptions
        unitConfig
        (named "target")
      ]
    );
    mounts = types.listOf (
      types.submodule [
        commonUnitOptions
        stage2UnitOptions
        mountOptions
        unitConfig
      ]
    );
    initrdMounts = types.listOf (
      types.submodule [
        commonUnitOptions
        mountOptions
        unitConfig
      ]
    );
  };

  # systemd-lib.nix `serviceToUnit` (via `commonUnitText`): the text of `<name>.service` as
  # NixOS writes it. globalEnvironment is systemd.globalEnvironment (empty unless set).
  serviceText =
    globalEnvironment: def:
    let
      env = globalEnvironment // def.environment;
    in
    ''
      [Unit]
      ${attrsToSection def.unitConfig}
    ''
    + "[Service]\n"
    + lib.concatMapStrings (
      n: lib.optionalString (env.${n} != null) "Environment=${builtins.toJSON "${n}=${env.${n}}"}\n"
    ) (lib.attrNames env)
    + (
      if def.reloadIfChanged or false then
        "X-ReloadIfChanged=true\n"
      else if !(def.restartIfChanged or true) then
        "X-RestartIfChanged=false\n"
      else
        ""
    )
    + lib.optionalString (!(def.stopIfChanged or true)) "X-StopIfChanged=false\n"
    + lib.optionalString (def.notSocketActivated or false) "X-NotSocketActivated=true\n"
    + attrsToSection def.serviceConfig
    + lib.optionalString (def.wantedBy != [ ]) ''

      [Install]
      WantedBy=${lib.concatStringsSep " " def.wantedBy}
    '';
}
