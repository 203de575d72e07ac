//! `sqskit purge`.

use std::io::{BufRead, IsTerminal, Write};

use crate::common::{sqs, Global};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queue URL, or its name (looked up with GetQueueUrl).
    #[arg(long)]
    pub queue_url: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

pub async fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let queue = crate::common::queue(&sqs(global).await?, &args.queue_url).await?;
    let depth = queue.attributes().await?;
    if !args.yes {
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "refusing to purge {} without --yes (stdin is not a terminal)",
            queue.name()
        );
        eprint!(
            "Delete all {} message(s) in {}? [y/N] ",
            depth.visible + depth.in_flight + depth.delayed,
            queue.name()
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("not purged");
            return Ok(());
        }
    }
    queue.purge().await?;
    println!("purged {}", queue.name());
    Ok(())
}
