"""The diffusers front end of the method: attention processors (processor.py) and video pipelines
(pipeline.py re-exports them: pipeline_sd.py for SD 1.x/2.x, pipeline_sdxl.py for SDXL, their shared clip loop
in video_loop.py) driven by the torch-only core one level up. Importing it imports diffusers; the core never
does.

    from cross_frame_attention.diffusers_frontend.pipeline import CrossFrameVideoPipeline, CrossFrameVideoXLPipeline
"""
