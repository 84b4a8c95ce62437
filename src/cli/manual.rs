//! The generated texts: shell completions and man pages, from the clap definitions.

use std::io::Write;
use std::path::Path;

use super::args::CompletionsArgs;
use super::BadInput;

pub(super) fn completions(a: &CompletionsArgs) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "coldtier", &mut buf);
    std::io::stdout().write_all(&buf)?;
    Ok(())
}

pub(super) fn manpage(dir: Option<&Path>) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let cmd = super::Cli::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| BadInput(format!("{}: {e}", dir.display())))?;
    let write = |name: &str, man: clap_mangen::Man| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut f = std::fs::File::create(&path)
            .map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
        man.render(&mut f)?;
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("coldtier-{}", sub.get_name());
        write(
            &name,
            clap_mangen::Man::new(sub.clone()).title(name.clone()),
        )?;
    }
    write("coldtier", clap_mangen::Man::new(cmd))?;
    Ok(())
}
