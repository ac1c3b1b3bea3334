"""The paper: its published figures, paired statistics, our tables and the reproduce command."""
